"""Building a model from its stored config, and loading a trained model from its checkpoint alone."""

from __future__ import annotations

import os
from typing import Any

from cryoshot.data.synthetic import PoolConfig
from cryoshot.errors import CryoshotError
from cryoshot.models.checkpoint import load_checkpoint
from cryoshot.models.encoders3d import encoder_config
from cryoshot.models.protonet import ProtoNet

SUPERVISED = ("finetune", "fscc")  # methods pre-trained with a classifier over the base classes


def build_model_from_config(config: dict[str, Any]) -> ProtoNet:
    """An untrained ProtoNet / ProtoNet-CE shaped as a training config (``TrainConfig.to_dict()``) says.

    Reads ``method``, ``encoder``, ``pool`` (box, pixel size, and its classes for the supervised
    methods' classifier) and ``stats_items_per_class`` (FSCC's statistics buffers).
    """
    pool = PoolConfig(**config["pool"])
    method = config["method"]
    enc = encoder_config(config["encoder"], input_box=pool.box_px, voxel_size_A=pool.pixel_size_A)
    n_base = len(pool.structure_specs()) if method in SUPERVISED else 0
    stats = config["stats_items_per_class"] if method == "fscc" else 0
    return ProtoNet(enc, adapter=method == "protonet-ce", n_base_classes=n_base, base_stats_items=stats)


def load_model(path: str | os.PathLike, method: str | tuple[str, ...] | None = None) -> tuple[ProtoNet, dict]:
    """Rebuild a trained ProtoNet / ProtoNet-CE from its checkpoint alone; returns (model in eval mode, checkpoint)."""
    ck = load_checkpoint(path, method=method)
    try:
        model = build_model_from_config(ck["config"])
        model.load_state_dict(ck["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CryoshotError(
            f"{path} is a cryoshot checkpoint whose configuration or weights this version cannot rebuild "
            f"({first}); retrain it with this version"
        ) from exc
    model.eval()
    return model, ck
