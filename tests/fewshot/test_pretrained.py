"""The shipped model loads from the package alone and carries its provenance."""

import numpy as np
import torch

from cryoshot.fewshot.methods import make_method
from cryoshot.models.checkpoint import load_checkpoint
from cryoshot.models.embedding import embed_volumes
from cryoshot.models.loading import load_model
from cryoshot.pretrained import resolve_model
from cryoshot.simulate.splits import NOVEL_STRUCTURES, TRAIN_STRUCTURES


def test_shipped_model_provenance_and_split():
    path = resolve_model("default")
    assert path.stat().st_size < 5e6
    ck = load_checkpoint(path, method="protonet-ce")
    assert {"config", "version", "seed", "argv", "history"} <= set(ck)
    trained_on = set(ck["config"]["pool"]["bundled"])
    assert trained_on <= set(TRAIN_STRUCTURES) and not trained_on & set(NOVEL_STRUCTURES)


def test_shipped_model_embeds_and_scores():
    model, _ = load_model(resolve_model("default"))
    vols = np.random.default_rng(0).normal(size=(6, 40, 40, 40)).astype(np.float32)
    z = embed_volumes(model, vols, 10.0, progress=False)
    assert z.shape == (6, model.encoder.dim) and torch.isfinite(z).all()
    s = make_method("protonet-ce", model).scores(z[:4], torch.tensor([0, 0, 1, 1]), z[4:], 2)
    torch.testing.assert_close(s.exp().sum(1), torch.ones(2))
