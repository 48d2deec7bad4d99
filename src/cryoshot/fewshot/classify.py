"""Classify a query subtomogram set from a labelled support set (``cryoshot classify``)."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cryoshot.errors import CryoshotError
from cryoshot.fewshot.methods import make_method, method_spec, scores_and_distances
from cryoshot.fewshot.openset import support_threshold
from cryoshot.io.images2d import is_2d_particle_set
from cryoshot.io.particles import drop_duplicate_images, load_subtomogram_set, rebase_image_names
from cryoshot.io.star import read_star_table_once, write_star
from cryoshot.utils.files import check_output_free, run_record_beside, write_run_record
from cryoshot.utils.hashing import file_sha256
from cryoshot.utils.workunits import (
    Runner,
    WorkUnit,
    cached,
    chunks,
    file_key,
    progress_folder,
    runner_or_serial,
    unit_output,
)

UNKNOWN = "unknown"


def _support_classes(labels: np.ndarray, shot: int | None, unknown: bool) -> np.ndarray:
    """The sorted support classes; errors for a class with fewer than ``shot`` examples or a lone class."""
    classes, counts = np.unique(labels, return_counts=True)
    if shot is not None:
        low = [(c, n) for c, n in zip(classes, counts, strict=True) if n < shot]
        if low:
            raise CryoshotError(
                f"support class {low[0][0]} has {low[0][1]} examples, fewer than --shot {shot}; label more"
            )
    if len(classes) < 2 and not unknown:
        raise CryoshotError("the support set has a single class; add classes or keep unknown detection on")
    return classes


def _prediction_table(
    table: pd.DataFrame, star_path: Path, output: str | os.PathLike, classes: np.ndarray, probs: np.ndarray,
    dist: torch.Tensor, thr: float | None, model_tag: str,
) -> pd.DataFrame:  # fmt: skip
    """The query table plus the prediction columns (``probs``, ``dist``: (M, N); ``unknown`` beyond ``thr``)."""
    min_d = dist.min(1).values.numpy()
    pred = np.array([str(classes[b]) for b in probs.argmax(1)], dtype=object)
    if thr is not None:
        pred[min_d > thr] = UNKNOWN
    out = table.copy()
    # image paths relative to the output STAR's folder, so the output is the next verb's input
    out["rlnImageName"] = rebase_image_names(out["rlnImageName"], star_path.parent, Path(output).parent)
    out["cryoshotPredictedClass"] = pred
    out["cryoshotProbability"] = probs.max(1)
    for j, c in enumerate(classes):
        out[f"cryoshotProb_{c}"] = probs[:, j]
    out["cryoshotMinDistance"] = min_d
    out["cryoshotModel"] = model_tag
    return out


UNIT_ROWS = 2048  # queries per work unit (a multiple of ProtoNet-CE's attention chunk)
ATTENDING_METHODS = ("protonet-ce", "cascade")  # queries attend to each other: chunks of the training size (15 n)


@dataclass
class ClassifyConfig:
    """Settings of ``cryoshot classify``: what decides the predictions.

    Attributes
    ----------
    method : a registry name (``cryoshot.fewshot.methods``); 2D particle images always use the Siamese prototypes
    shot : require at least this many support examples per class (all are used)
    label_column : the support's label column
    angpix : pixel size in Å overriding the files (support and query)
    unknown : answer ``unknown`` beyond the threshold
    unknown_quantile, unknown_margin : the threshold is the quantile of the leave-one-out support
        distances times the margin (``cryoshot.fewshot.openset``); larger values reject less
    tilt_range_deg : template matching's missing wedge (degrees); None for no wedge
    unit_rows : queries per work unit (rounded up to ProtoNet-CE's query chunk); the result does not depend on it
    rotations : wedge-preserving rotations (1, 2 or 4) whose embeddings the learned methods average; None: the
        default (``models.embedding.EMBED_ROTATIONS``); 1 is about 3x faster than 4 and less accurate
    """

    method: str = "protonet"
    shot: int | None = None
    label_column: str = "rlnClassNumber"
    angpix: float | None = None
    unknown: bool = True
    unknown_quantile: float = 0.95
    unknown_margin: float = 1.5
    tilt_range_deg: tuple[float, float] | None = (-60.0, 60.0)
    unit_rows: int = UNIT_ROWS
    rotations: int | None = None

    def validate(self) -> None:
        method_spec(self.method)  # names the choices
        if not 0.0 < self.unknown_quantile <= 1.0 or not self.unknown_margin > 0:
            raise CryoshotError(f"the unknown quantile must be in (0, 1] and the margin > 0, got "
                                f"{self.unknown_quantile}, {self.unknown_margin}")  # fmt: skip
        if self.shot is not None and self.shot < 1:
            raise CryoshotError(f"--shot must be at least 1, got {self.shot}")
        if self.angpix is not None and not self.angpix > 0:
            raise CryoshotError(f"--angpix must be positive, got {self.angpix}")
        if self.rotations not in (None, 1, 2, 4):
            raise CryoshotError(f"--rotations must be 1, 2 or 4, got {self.rotations}")
        if self.unit_rows < 1:
            raise CryoshotError(f"unit_rows must be at least 1, got {self.unit_rows}")


def _query_geometry(query_star, angpix: float | None) -> tuple[pd.DataFrame, Path, int, float]:
    """The query table (duplicates dropped) and the box and voxel size of its first subtomogram."""
    first = load_subtomogram_set(query_star, label_column=None, angpix=angpix, progress=False, rows=(0, 1),
                                 warn_duplicates=False)  # fmt: skip
    table, _, _ = drop_duplicate_images(read_star_table_once(query_star), query_star)  # the parse just made
    return table, first.star_path, first.box, first.voxel_size_A


def _method_for(method: str, model_path: str | None, tilt_range, rotations: int | None, *_key) -> object:
    from cryoshot.models.loading import load_model
    from cryoshot.utils import workunits

    model = load_model(model_path)[0] if model_path is not None else None
    if model is not None and workunits.DEVICE != "cpu":  # the encoder (the cost); small heads stay on the CPU
        model.encoder.to(workunits.DEVICE)
    return make_method(method, model, tilt_range=tilt_range, rotations=rotations)


def _support_for(path: str, *_key) -> tuple[torch.Tensor, torch.Tensor]:
    d = torch.load(path, weights_only=True)
    return d["zs"], d["ts"]


def classify_rows_unit(method: str, model_path: str | None, tilt_range, rotations: int | None, support_file: str,
                       query_star: str,
                       angpix: float | None, rows: tuple[int, int], grid: tuple[int, float], n: int, chunk: int, *,
                       out: Path) -> None:  # fmt: skip
    """Work unit: scores and distances (``.npz``) of query rows ``[start, stop)`` against the support."""
    m = cached(_method_for, method, model_path, tilt_range, rotations, *(file_key(model_path) if model_path else ()))
    zs, ts = cached(_support_for, support_file, *file_key(support_file))
    qry = load_subtomogram_set(query_star, label_column=None, angpix=angpix, progress=False, rows=rows,
                               warn_duplicates=False)  # fmt: skip
    if (qry.box, round(qry.voxel_size_A, 3)) != (grid[0], round(grid[1], 3)):
        raise CryoshotError(f"mixed box or voxel sizes in {query_star}: rows {rows[0] + 1}..{rows[1]} are {qry.box}^3 "
                            f"at {qry.voxel_size_A:.3g} Å, the first subtomogram {grid[0]}^3 at {grid[1]:.3g} Å; "
                            "extract all subtomograms with one box and voxel size")  # fmt: skip
    zq = m.embed(qry.volumes, qry.voxel_size_A, progress=False)
    with torch.no_grad():
        parts = [scores_and_distances(m, zs, ts, zq[s : s + chunk], n) for s in range(0, len(zq), chunk)]
    logp = torch.cat([p for p, _ in parts]).float().cpu().numpy()
    dist = torch.cat([d for _, d in parts]).float().cpu().numpy()
    with unit_output(out) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, logp=logp, dist=dist)


def classify_sets(
    support_star: str | os.PathLike,
    query_star: str | os.PathLike,
    output: str | os.PathLike,
    config: ClassifyConfig | None = None,
    *,
    model_path: str | os.PathLike,
    force: bool = False,
    progress: bool = True,
    runner: Runner | None = None,
    continue_: bool = False,
) -> pd.DataFrame:
    """Predict a class for every query; write the query table plus predictions to ``output`` (STAR).

    Columns added: ``cryoshotPredictedClass`` (a support label or ``unknown``),
    ``cryoshotProbability`` and ``cryoshotProb_<label>`` (the method's own class probabilities:
    softmax over -d for ProtoNet, the logistic regression for FSCC, softmax of NCC / 0.02 for
    template), ``cryoshotMinDistance``, ``cryoshotModel`` (file name and SHA-256 prefix).

    The queries are read and scored in work units of ``config.unit_rows`` (rounded up to a
    multiple of ProtoNet-CE's attention chunk, so the result does not depend on the split), run
    by ``runner`` (None: this process; or a ``cryoshot.distributed`` runner). Unit results wait
    in a hidden folder beside ``output``; ``continue_`` reuses them after a failure or a kill.
    Run from the command line, the resolved settings go to ``OUTPUT.run.yaml`` beside it.
    """
    cfg = config or ClassifyConfig()
    cfg.validate()  # the unknown-method error before any loading
    check_output_free(output, force)
    record = run_record_beside(output, force)  # OUTPUT.run.yaml when run from the command line
    kw = {"model_path": model_path, "force": force, "progress": progress, "runner": runner, "continue_": continue_}
    run = classify_images if is_2d_particle_set(support_star) else _classify_volumes
    out = run(support_star, query_star, output, cfg, **kw)
    if record is not None:
        write_run_record(record, force)
    return out


def _classify_volumes(support_star, query_star, output, cfg: ClassifyConfig, *, model_path, force: bool,
                      progress: bool, runner: Runner | None, continue_: bool) -> pd.DataFrame:  # fmt: skip
    """:func:`classify_sets` for subtomograms."""
    from cryoshot.models.loading import load_model

    method, angpix, tilt_range = cfg.method, cfg.angpix, cfg.tilt_range_deg
    spec = method_spec(method)
    model = load_model(model_path)[0] if spec.needs_model else None
    m = make_method(method, model, tilt_range=tilt_range, rotations=cfg.rotations)
    if hasattr(m, "progress"):
        m.progress = progress
    sup = load_subtomogram_set(support_star, label_column=cfg.label_column, angpix=angpix, progress=progress)
    q_table, q_path, q_box, q_voxel = _query_geometry(query_star, angpix)
    classes = _support_classes(sup.labels, cfg.shot, cfg.unknown)
    t0 = time.perf_counter()
    if abs(sup.voxel_size_A - q_voxel) > 1e-3 * sup.voxel_size_A:
        print(f"cryoshot: warning: the support ({sup.voxel_size_A:.3g} Å) and query ({q_voxel:.3g} Å) voxel "
              "sizes differ; both are resampled to the model's grid, but if a header is wrong every query may look "
              "'unknown': check them, or set one size with --angpix", file=sys.stderr)  # fmt: skip
    if sup.box != q_box or abs(sup.voxel_size_A - q_voxel) > 1e-3:
        if not spec.needs_model:
            raise CryoshotError(
                f"support (box {sup.box}, {sup.voxel_size_A:.2f} Å) and query (box "
                f"{q_box}, {q_voxel:.2f} Å) differ; template matching needs one grid"
            )
    zs = m.embed(sup.volumes, sup.voxel_size_A, progress=progress)
    ts = torch.as_tensor(np.searchsorted(classes, sup.labels))
    n = len(classes)
    # ProtoNet-CE attends over prototypes + a query chunk of the training size; the others score all at once
    attends = method in ATTENDING_METHODS
    chunk = 15 * n if attends else max(1, len(q_table))
    size = chunk * -(-cfg.unit_rows // chunk) if attends else cfg.unit_rows
    settings = {"method": method, "model": file_sha256(model_path) if model is not None else None,
                "support": file_sha256(support_star), "query": file_sha256(query_star), "angpix": angpix,
                "label_column": cfg.label_column, "tilt_range": tilt_range, "unit_rows": size,
                "rotations": cfg.rotations}  # fmt: skip
    with progress_folder(output, settings, continue_) as partial:
        support_file = partial / "support.pt"
        torch.save({"zs": zs.cpu(), "ts": ts}, support_file)
        mp = str(Path(model_path).resolve()) if model is not None else None
        units = [WorkUnit(f"rows_{a:09d}", f"query rows {a + 1}..{b}", classify_rows_unit,
                          (method, mp, tilt_range, cfg.rotations, str(support_file.resolve()), str(q_path.resolve()),
                           angpix, (a, b), (q_box, q_voxel), n, min(chunk, size)), partial / f"rows_{a:09d}.npz")
                 for a, b in chunks(len(q_table), size)]  # fmt: skip
        runner_or_serial(runner).run(units, desc="classifying", progress=progress)
        parts = [np.load(u.out) for u in units]
        probs = np.exp(np.concatenate([p["logp"] for p in parts]))
        dist = torch.from_numpy(np.concatenate([p["dist"] for p in parts]))
        with torch.no_grad():
            thr = (support_threshold(m, zs, ts, n, cfg.unknown_quantile, cfg.unknown_margin)
                   if cfg.unknown else None)  # fmt: skip
        seconds = time.perf_counter() - t0
        model_tag = f"{Path(model_path).name}:{file_sha256(model_path)[:12]}" if model is not None else method
        out = _prediction_table(q_table, q_path, output, classes, probs, dist, thr, model_tag)
        write_star(output, out, force=force)
    out.attrs.update({"threshold": thr, "seconds_compute": seconds, "classes": list(map(str, classes)),
                      "voxel_size_support_A": sup.voxel_size_A, "voxel_size_query_A": q_voxel})  # fmt: skip
    return out


def classify_images(
    support_star: str | os.PathLike,
    query_star: str | os.PathLike,
    output: str | os.PathLike,
    config: ClassifyConfig | None = None,
    *,
    model_path: str | os.PathLike,
    force: bool = False,
    progress: bool = True,
    runner: Runner | None = None,
    continue_: bool = False,
) -> pd.DataFrame:
    """2D particle images: prototypes of the support in the Siamese embedding; same columns as for subtomograms.

    The queries are embedded in work units (``runner``, ``continue_`` as for subtomograms).
    """
    from cryoshot.embedding.workflow import embed_particle_images, embed_star_rows
    from cryoshot.fewshot.images2d import SiamesePrototypes
    from cryoshot.io.images2d import load_particle_images, read_particle_table
    from cryoshot.models.checkpoint import load_checkpoint
    from cryoshot.models.siamese2d import build_siamese

    cfg = config or ClassifyConfig()
    cfg.validate()
    angpix = cfg.angpix
    check_output_free(output, force)
    ck = load_checkpoint(model_path)
    if ck["method"] != "siamese":
        raise CryoshotError(f"{model_path} is not a Siamese 2D model, but the support set holds 2D particle images; "
                            "use --model default (the shipped Siamese model) or a model from 'cryoshot train siamese'")  # fmt: skip
    sup = load_particle_images(support_star, label_column=cfg.label_column, angpix=angpix, progress=progress)
    q_table, q_optics = read_particle_table(query_star)
    q0 = load_particle_images(query_star, angpix=angpix, progress=False, rows=(0, 1))  # format errors first
    classes = _support_classes(sup.labels, cfg.shot, cfg.unknown)
    t0 = time.perf_counter()
    net = build_siamese(ck)
    zs = torch.from_numpy(embed_particle_images(sup, net, progress=progress))
    settings = {"model": file_sha256(model_path), "query": file_sha256(query_star), "angpix": angpix,
                "unit_rows": cfg.unit_rows}  # fmt: skip
    with progress_folder(output, settings, continue_) as partial:
        zq = torch.from_numpy(embed_star_rows(query_star, model_path, len(q_table), partial, angpix=angpix,
                                              runner=runner, unit_rows=cfg.unit_rows, progress=progress))  # fmt: skip
        ts = torch.as_tensor(np.searchsorted(classes, sup.labels))
        m, n = SiamesePrototypes(), len(classes)
        with torch.no_grad():
            logp, dist = m.scores_and_distances(zs, ts, zq, n)
            thr = support_threshold(m, zs, ts, n, cfg.unknown_quantile, cfg.unknown_margin) if cfg.unknown else None
        model_tag = f"{Path(model_path).name}:{file_sha256(model_path)[:12]}"
        out = _prediction_table(q_table, q0.star_path, output, classes, logp.exp().numpy(), dist, thr, model_tag)
        write_star(output, {"optics": q_optics, "particles": out} if q_optics is not None else out, force=force)
    out.attrs.update({"threshold": thr, "seconds_compute": time.perf_counter() - t0,
                      "classes": list(map(str, classes)), "voxel_size_support_A": sup.pixel_size_A,
                      "voxel_size_query_A": q0.pixel_size_A})  # fmt: skip
    return out
