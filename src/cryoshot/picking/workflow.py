"""``cryoshot pick`` as one library call: exemplars + micrographs -> RELION coordinate files.

Order of work: check everything (settings, output, micrographs, exemplars, model), run
stage 1 on the reference micrograph(s), save ``picker.pt``, then run stage 2 on every
micrograph (one work unit each: its candidates and their figure of merit), then cut every
micrograph's candidates at the threshold (with ``auto``, one fitted to the candidates of all
micrographs together). Progress is kept in a hidden folder beside the output
(``.OUTDIR.cryoshot-partial``), so ``continue_=True`` after a kill skips finished
micrographs and reuses the stage-1 model; the output folder appears, complete, only at
the end.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cryoshot import __version__
from cryoshot.errors import CryoshotError
from cryoshot.io.mrc import require_input_file
from cryoshot.io.star import read_star_table, require_columns, write_star
from cryoshot.models.checkpoint import save_checkpoint
from cryoshot.models.mae2d import PickerMAE, load_mae
from cryoshot.picking.matching import match_picks
from cryoshot.picking.merit import fuse_scores
from cryoshot.picking.micrograph import (
    BinnedMicrograph,
    bin_micrograph,
    binning_factor,
    micrograph_header,
    read_micrograph,
)
from cryoshot.picking.scan import candidate_picks, exemplar_features, greedy_nms, windows_at
from cryoshot.picking.stage1 import Stage1Config, fine_tune
from cryoshot.picking.template import exemplar_template, ncc_at, ncc_map
from cryoshot.picking.threshold import POOLED_RULES, THRESHOLD_RULES, auto_threshold, rule_thresholds
from cryoshot.picking.views import (
    VIEW_STEP_PX,
    ViewImage,
    ViewReference,
    view_image,
    view_pixel_size,
    view_reference,
    view_search,
)
from cryoshot.pretrained import resolve_picker_model, resolve_siamese_model
from cryoshot.utils.files import atomic_dir, check_output_free, output_lock
from cryoshot.utils.hashing import file_sha256
from cryoshot.utils.threads import configure_threads
from cryoshot.utils.workunits import (
    Runner,
    UnitsFailed,
    WorkUnit,
    cached,
    file_key,
    prepare_partial,
    runner_or_serial,
)

# ``--threshold auto``: three Gaussian components, the top one kept (background, other proteins, the exemplars'
# kind; benchmarks/choose_pick_procedural.py), fitted once to the candidates of all micrographs but the
# reference(s) (benchmarks/choose_pick_pooled_cut.py); both chosen on held-out procedural molecules and training maps
DEFAULT_RULE = "gmm3-pooled"
PARTICLE_RULE = "gmm"  # particles of any kind against background (the particle density behind pi)
# weights of the exemplars' template NCC and of the Siamese network's view similarity in the figure of merit
# (the MAE's cosine gets the rest); chosen on training structures (benchmarks/choose_pick_rerank.py;
# docs/benchmarks.md, "The Siamese network's opinion"). Both 0: the paper's cosine alone.
TEMPLATE_WEIGHT = 0.4
VIEW_WEIGHT = 0.5
# A particle larger than 180 Å is binned as if it were 180 Å (but at least 0.65 of its size, so that it still fits the
# model's 24 px window): a binned pixel is then never coarser than about 11 Å (the model's 16 px per diameter). On the
# dev sets of both simulators (cryoshot's and benchmarks/othersim.py's, training structures only) the particles of
# 216-360 Å picked better at 0.65-0.8 of their size; those of 95-180 Å no better on the whole, the smallest worse
# (benchmarks/choose_pick_scale.py, othersim_picking.py --dev; docs/benchmarks.md, "The working scale of large
# particles" and "A second simulator")
MAX_WORK_DIAMETER_A = 180.0
MIN_DIAMETER_SCALE = 0.65
PARTIAL_MARK = "cryoshot-pick-partial.json"


@dataclass
class PickConfig:
    """Settings of ``cryoshot pick`` (diameter in Å; distances on the binned scale in diameters)."""

    diameter_A: float
    angpix: float | None = None
    threshold: str = "auto"
    max_picks: int | None = None
    stride_px: int = 4
    nms_distance: float = 0.7
    matching: str = "max"
    template_weight: float = TEMPLATE_WEIGHT
    view_weight: float = VIEW_WEIGHT
    view_shift_px: float = VIEW_STEP_PX  # view pixels a candidate may move to the view opinion's best (0: none)
    diameter_scale: float | None = None  # the fraction of the typed diameter the picker bins for (None: automatic)
    seed: int = 0
    stage1: Stage1Config = field(default_factory=Stage1Config)

    def validate(self) -> None:
        if not (np.isfinite(self.diameter_A) and self.diameter_A > 0):
            raise CryoshotError(f"--diameter must be a positive number of Å, got {self.diameter_A}")
        if self.angpix is not None and not self.angpix > 0:
            raise CryoshotError(f"--angpix must be positive, got {self.angpix}")
        threshold_value(self.threshold)
        if self.max_picks is not None and self.max_picks < 1:
            raise CryoshotError("--max-picks must be at least 1")
        if not 1 <= self.stride_px <= 12:
            raise CryoshotError(f"--stride must be 1..12 binned pixels, got {self.stride_px}")
        if self.matching not in ("max", "mean"):
            raise CryoshotError(f"--matching must be max or mean, got {self.matching!r}")
        if not 0.0 <= self.template_weight <= 1.0:
            raise CryoshotError(f"--template-weight must be in 0..1, got {self.template_weight}")
        if not 0.0 <= self.view_weight <= 1.0:
            raise CryoshotError(f"--view-weight must be in 0..1, got {self.view_weight}")
        if self.template_weight + self.view_weight > 1.0 + 1e-9:
            raise CryoshotError(f"--template-weight ({self.template_weight:g}) and --view-weight ({self.view_weight:g}) "
                                "must sum to at most 1; the MAE's cosine gets the rest")  # fmt: skip
        if not 0.0 <= self.view_shift_px <= 8.0:
            raise CryoshotError(f"view shift must be 0..8 view pixels, got {self.view_shift_px}")
        if self.diameter_scale is not None and not 0.5 <= self.diameter_scale <= 1.5:
            raise CryoshotError(f"diameter scale must be 0.5..1.5, got {self.diameter_scale}")
        if not 0.1 <= self.nms_distance <= 3:
            raise CryoshotError(f"NMS distance must be 0.1..3 diameters, got {self.nms_distance}")
        (self.stage1.loss.validate() if self.stage1.loss else None)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def work_diameter_A(self) -> float:
        """The diameter (Å) the picker bins for and measures its distances in: ``diameter_scale`` x the typed one,
        or by default the typed one capped at ``MAX_WORK_DIAMETER_A`` (not below ``MIN_DIAMETER_SCALE`` of it). The
        outputs, the previews and any IoU keep the typed diameter."""
        if self.diameter_scale is not None:
            return self.diameter_A * self.diameter_scale
        return max(MIN_DIAMETER_SCALE * self.diameter_A, min(self.diameter_A, MAX_WORK_DIAMETER_A))


def threshold_value(text: str) -> str | float:
    """``auto`` -> the default rule; a rule name; or a score (float)."""
    t = str(text).strip().lower()
    if t == "auto":
        return DEFAULT_RULE
    if t in THRESHOLD_RULES:
        return t
    try:
        v = float(t)
    except ValueError:
        raise CryoshotError(
            f"--threshold must be auto, {', '.join(THRESHOLD_RULES)} or a score on the scale of "
            f"rlnAutopickFigureOfMerit, got '{text}'"
        ) from None
    if not np.isfinite(v):
        raise CryoshotError(f"--threshold as a score must be a finite number, got {v}")
    return v


@dataclass
class MicrographPicks:
    """Picks of one micrograph (input pixels) and how they were cut."""

    name: str
    xy: np.ndarray
    score: np.ndarray
    threshold: float
    n_candidates: int


@dataclass
class PickSummary:
    n_micrographs: int
    n_picks: int
    outdir: Path
    picks_star: Path
    model: Path
    stage1: dict | None
    pi: float | None
    skipped: int = 0
    previews: list[Path] = field(default_factory=list)


# ---- inputs ---------------------------------------------------------------------------------
def _resolve_exemplar_names(star: Path, names: list[str], mics: list[Path]) -> dict[str, int]:
    """Map each rlnMicrographName to the index of the micrograph argument it names.

    A name is resolved as written, or relative to the STAR file; failing both, a name whose file
    name (or, without an extension, stem) matches exactly one micrograph argument is that one,
    as RELION projects name micrographs relative to a project folder that need not be here.
    """
    by_path = {m.resolve(): i for i, m in enumerate(mics)}
    out = {}
    for name in names:
        for cand in (Path(name), star.parent / name):
            if cand.exists() and cand.resolve() in by_path:
                out[name] = by_path[cand.resolve()]
                break
        else:
            base = Path(name).name
            same = [i for i, m in enumerate(mics) if m.name == base or (not Path(base).suffix and m.stem == base)]
            if len(same) == 1:
                out[name] = same[0]
                continue
            given = ", ".join(str(m) for m in mics[:3]) + (" ..." if len(mics) > 3 else "")
            raise CryoshotError(
                f"exemplars in {star} are on micrograph '{name}', which is not among the micrographs given ({given}); "
                "give that micrograph too (its name is resolved as written, or relative to the STAR file)"
            )
    return out


COORDINATE_FILE_SUFFIXES = ("_manualpick", "_autopick", "_pick", "_coords")  # RELION's and common pickers' names


def _micrograph_of_coordinate_file(star: Path, mics: list[Path]) -> int:
    """The micrograph a per-micrograph coordinate file (no rlnMicrographName) belongs to.

    One micrograph given: that one. Otherwise the file's name must name exactly one micrograph,
    as RELION names its coordinate files (``mic_0001_manualpick.star`` for ``mic_0001.mrc``).
    """
    if len(mics) == 1:
        return 0
    # the file's own stem first, then the stem without a picker's suffix
    bases = [star.stem] + [star.stem.removesuffix(s) for s in COORDINATE_FILE_SUFFIXES if star.stem.endswith(s)]
    for base in bases:
        same = [i for i, m in enumerate(mics) if m.stem == base]
        if len(same) == 1:
            return same[0]
    raise CryoshotError(
        f"{star} lacks rlnMicrographName, and its name does not name one of the {len(mics)} micrographs given "
        "(as RELION's <micrograph>_manualpick.star does); add the column, or give only the reference micrograph"
    )


def read_exemplars(star: str | os.PathLike, mics: list[Path]) -> pd.DataFrame:
    """Exemplar table with a ``mic`` column (index into ``mics``); checks names and counts."""
    star = require_input_file(star, "STAR")
    df = read_star_table(star)
    require_columns(df, ["rlnCoordinateX", "rlnCoordinateY"], star)
    if len(df) < 1:
        raise CryoshotError(f"{star} holds no exemplars; pick at least one particle (15 is a good number)")
    if "rlnMicrographName" not in df.columns:
        df = df.assign(mic=_micrograph_of_coordinate_file(star, mics))
    else:
        names = [str(v) for v in df["rlnMicrographName"]]
        where = _resolve_exemplar_names(star, sorted(set(names)), mics)
        df = df.assign(mic=[where[n] for n in names])
    xy = df[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float)
    if not np.isfinite(xy).all():
        raise CryoshotError(f"{star} has non-numeric or infinite exemplar coordinates")
    return df.reset_index(drop=True)


def coordinate_file_name(mic: Path, kind: str = "autopick") -> str:
    """RELION's autopick naming, ``<micrograph stem>_autopick.star``; ``kind="candidates"`` names the file of
    every candidate before the threshold."""
    return f"{mic.name.rsplit('.', 1)[0]}_{kind}.star"


# ---- the model ------------------------------------------------------------------------------
def _exemplars_entry(exemplar_file: Path, n: int, ref_mics: list[Path]) -> dict:
    """picker.pt's ``exemplars`` entry: the STAR file, how many, and the reference micrographs (name and sha256),
    so that a run reusing the picker on them leaves them out of the pooled cut's fit, as the first run did."""
    return {"name": exemplar_file.name, "sha256": file_sha256(exemplar_file), "n": n,
            "micrographs": [{"name": m.name, "sha256": file_sha256(m)} for m in ref_mics]}  # fmt: skip


def _stored_references(ck: dict, mics: list[Path]) -> list[int]:
    """Indices of ``mics`` that are a stored picker's reference micrographs (same name and content)."""
    stored = {(r["name"], r["sha256"]) for r in (ck.get("exemplars") or {}).get("micrographs") or []}
    names = {name for name, _ in stored}  # only a file of a stored name is hashed
    return [k for k, m in enumerate(mics) if m.name in names and (m.name, file_sha256(m)) in stored]


def _picker_payload(model: PickerMAE, cfg: PickConfig, base: dict, base_path: Path, exemplar_feats: torch.Tensor,
                    exemplar_file: Path, stage1: dict, pi: float, template: np.ndarray,
                    views: ViewReference | None, ref_mics: list[Path]) -> dict:  # fmt: skip
    this = {"method": "picker", "config": {"pick": cfg.to_dict(), "stage1": stage1, "pi": pi},
            "version": __version__, "seed": cfg.seed, "argv": list(sys.argv)}  # fmt: skip
    stages = [*(base.get("stages") or []), this]
    return {
        "state_dict": model.state_dict(), "method": "picker", "seed": cfg.seed,
        "config": {"model": model.config.to_dict(), "pick": cfg.to_dict(), "pi": pi},
        "exemplar_features": exemplar_feats.clone(),
        "template": torch.from_numpy(template.copy()),
        "base_model": {"name": base_path.name, "sha256": file_sha256(base_path)},
        "exemplars": _exemplars_entry(exemplar_file, len(exemplar_feats), ref_mics),
        "stages": stages,
        **_views_payload(views),
    }  # fmt: skip


def _views_payload(views: ViewReference | None) -> dict:
    """picker.pt's ``views`` entry: the Siamese network (weights, config, source) and the exemplars' embeddings."""
    if views is None:
        return {}
    source = views.source
    if source is None:
        src = resolve_siamese_model("default")
        source = {"name": src.name, "sha256": file_sha256(src)}
    return {"views": {
        "features": torch.from_numpy(views.features.copy()), "polarity": float(views.polarity),
        "pixel_size_A": views.view_pixel_A, "config": views.net.cfg.to_dict(), "state_dict": views.net.state_dict(),
        "model": source}}  # fmt: skip


def _load_view_net(path: str, *_key):
    from cryoshot.models.siamese2d import load_siamese

    return load_siamese(path)[0]


def _view_net():
    """The shipped Siamese 2D network (loaded once per process)."""
    return cached(_load_view_net, *file_key(resolve_siamese_model("default")))


def _stored_views(ck: dict) -> ViewReference | None:
    """A picker.pt's Siamese opinion (None in a file written before it was kept: no view opinion)."""
    from cryoshot.models.siamese2d import build_siamese

    v = ck.get("views")
    if v is None:
        return None
    net = build_siamese({"config": v["config"], "state_dict": v["state_dict"]})
    # a file written before the view pixel size was kept embedded at the network's own (None)
    return ViewReference(net, v["features"].numpy(), float(v["polarity"]), dict(v["model"]), v.get("pixel_size_A"))


def estimate_pi(model: PickerMAE, images: list[BinnedMicrograph], ex: torch.Tensor, cfg: PickConfig) -> float:
    """Fraction of random windows holding a particle, from the particle count the untuned model finds."""
    d = model.config.particle_px
    n, area = 0, 0
    for b in images:
        xy, s, _ = candidate_picks(model, b.image, ex, cfg.stride_px, cfg.nms_distance, cfg.matching)
        n += int((s >= auto_threshold(s, PARTICLE_RULE)).sum()) if len(s) else 0
        area += b.image.size
    return float(min(0.5, n * np.pi * (d / 2) ** 2 / max(area, 1)))


# ---- the whole verb -------------------------------------------------------------------------
def pick(
    micrographs: list[str | os.PathLike],
    exemplars: str | os.PathLike | None,
    outdir: str | os.PathLike,
    config: PickConfig,
    *,
    model: str = "default",
    force: bool = False,
    continue_: bool = False,
    preview: str | os.PathLike | None = None,
    n_preview: int = 3,
    truth: str | os.PathLike | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    runner: Runner | None = None,
) -> PickSummary:
    """Pick particles like the exemplars in every micrograph; write RELION STAR files to ``outdir``.

    Parameters
    ----------
    micrographs : 2D MRC files (the exemplars' reference micrographs among them)
    exemplars : STAR with rlnMicrographName, rlnCoordinateX, rlnCoordinateY (pixels); may be None
        with a ``picker.pt`` model, whose stored exemplar features are then used
    outdir : gets ``picks.star``, ``coordinates/<mic>_autopick.star``, ``picker.pt``, and
        ``candidates/<mic>_candidates.star`` (every candidate before the threshold, for another cut)
    model : ``default`` (the shipped MAE), a pre-trained MAE, or an earlier run's ``picker.pt`` (no stage 1)
    continue_ : resume a killed run (or extend a finished one), skipping finished micrographs
    preview : folder for PNGs of the first ``n_preview`` micrographs (picks and similarity map)
    truth : ground-truth coordinates, to colour previews (true / false positives)
    runner : where the micrographs are picked (one work unit each): None for this process, or a
        ``cryoshot.distributed`` runner; the output does not depend on it
    """
    config.validate()
    configure_threads()
    outdir = Path(outdir)
    if not micrographs:
        raise CryoshotError("no micrographs given: pass one or more .mrc files")
    mics = [require_input_file(m, "micrograph") for m in micrographs]
    if len({m.resolve() for m in mics}) != len(mics):
        raise CryoshotError("a micrograph is given twice; give each once")
    stems = [coordinate_file_name(m) for m in mics]
    if len(set(stems)) != len(stems):
        raise CryoshotError("two micrographs share a file name (in different folders); their coordinate files would "
                            "collide in OUTDIR/coordinates. Rename one")  # fmt: skip
    if not continue_:
        check_output_free(outdir, force, folder=True)
    elif outdir.exists():
        check_output_free(outdir, True, folder=True)  # ours to extend
    elif not outdir.parent.is_dir():
        raise CryoshotError(f"output folder {outdir.parent} does not exist; create it first")
    if preview is not None:
        check_output_free(preview, force, folder=True)
    if truth is not None:
        truth_df = read_star_table(require_input_file(truth, "STAR"))
        require_columns(truth_df, ["rlnCoordinateX", "rlnCoordinateY"], truth)
    else:
        truth_df = None
    # every micrograph's header: 2D, a pixel size, big enough for the particle (data are read later)
    headers = [micrograph_header(m, config.angpix) for m in mics]
    model_path = resolve_picker_model(model)
    net, ck = load_mae(model_path)
    d_px = net.config.particle_px
    for m, (shape, ps) in zip(mics, headers, strict=True):
        try:
            binning_factor(config.diameter_A, ps, d_px, shape)
        except CryoshotError as exc:
            raise CryoshotError(f"{m}: {exc}") from None
    sizes = {round(ps, 4) for _, ps in headers}
    if len(sizes) > 1:
        log(f"cryoshot: warning: the micrographs have {len(sizes)} pixel sizes ({', '.join(map(str, sorted(sizes)))} Å); "
            "each is binned from its own pixel size, so picks stay in each micrograph's pixels")  # fmt: skip
    is_picker = ck["method"] == "picker"
    if exemplars is None and not is_picker:
        raise CryoshotError("--exemplars is needed (a STAR file of particles you picked) unless --model is a "
                            "picker.pt from an earlier run")  # fmt: skip
    ex_df = read_exemplars(exemplars, mics) if exemplars is not None else None
    if ex_df is not None:
        for i in sorted(set(ex_df["mic"])):
            (h, w_), _ = headers[i]
            xy = ex_df.loc[ex_df["mic"] == i, ["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float)
            bad = (xy[:, 0] < 0) | (xy[:, 0] > w_ - 1) | (xy[:, 1] < 0) | (xy[:, 1] > h - 1)
            if bad.any():
                x, y = xy[np.argmax(bad)]
                raise CryoshotError(f"exemplar ({x:g}, {y:g}) lies outside micrograph {mics[i]} ({w_} x {h} px); "
                                    "coordinates are in pixels of that micrograph")  # fmt: skip
    w = net.config.window_px
    with output_lock(outdir):
        partial = outdir.parent / f".{outdir.name}.cryoshot-partial"
        settings = {"config": config.to_dict(), "model": file_sha256(model_path), "units": "candidates",
                    "exemplars": file_sha256(exemplars) if exemplars is not None else None}  # fmt: skip
        fresh = _prepare_partial(partial, outdir, settings, continue_, log)
        try:
            return _run(net, ck, mics, micrographs, stems, headers, ex_df, exemplars, model_path, outdir, partial,
                        config, continue_, is_picker, preview, n_preview, truth_df, force, progress, log, w, d_px,
                        runner)  # fmt: skip
        except Exception as exc:
            if (
                fresh and not isinstance(exc, UnitsFailed)
            ):  # the finished units are kept for --continue  # an input error found mid-run: leave nothing behind (a kill or Ctrl-C keeps the progress)
                shutil.rmtree(partial, ignore_errors=True)
            raise


def _run(net, ck, mics, micrographs, stems, headers, ex_df, exemplars, model_path, outdir, partial, config,
         continue_, is_picker, preview, n_preview, truth_df, force, progress, log, w, d_px, runner) -> PickSummary:  # fmt: skip
    """The work of :func:`pick` once every input has been checked."""
    stage1_info, pi = None, None
    picker_path = partial / "picker.pt"
    if continue_ and picker_path.exists():
        net, ck = load_mae(picker_path)
        ex_feats, template, views = ck["exemplar_features"], _stored_template(ck), _stored_views(ck)
        log(f"continuing: reusing the stage-1 model in {outdir.name}/picker.pt")
    else:
        refs: dict[int, BinnedMicrograph] = {}
        ex_xy: list[tuple[int, float, float]] = []
        ref_views: list[tuple[ViewImage, np.ndarray]] = []
        stored = _stored_views(ck) if is_picker else None
        vnet = (stored.net if stored is not None else _view_net()) if config.view_weight else None
        view_px = view_pixel_size(vnet, config.diameter_A) if vnet is not None else None
        if ex_df is not None:
            for i in sorted(set(ex_df["mic"])):
                img, ps = read_micrograph(mics[i], config.angpix)
                refs[i] = bin_micrograph(img, ps, config.work_diameter_A, d_px)
                xy = ex_df.loc[ex_df["mic"] == i, ["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float)
                ex_xy += [(len(refs) - 1, float(x), float(y)) for x, y in refs[i].to_binned(xy)]
                if vnet is not None:
                    ref_views.append((view_image(img, ps, vnet, config.work_diameter_A, view_px), xy))
        ref_list = list(refs.values())
        views = view_reference(vnet, ref_views, config.work_diameter_A, view_px) if ref_views else None
        if views is not None and stored is not None:
            views.source = stored.source
        if is_picker and ex_df is None:
            ex_feats, template, views = ck["exemplar_features"], _stored_template(ck), stored
        elif is_picker:
            ex_feats, template = _features(net, ref_list, ex_xy, w), _template(ref_list, ex_xy, w)
        else:
            base_feats = _features(net, ref_list, ex_xy, w)
            loss = config.stage1.loss
            pi = loss.pi if loss is not None and loss.pi is not None else estimate_pi(net, ref_list, base_feats, config)
            stage1_info = fine_tune(net, [r.image for r in ref_list], ex_xy, config.stage1, pi, config.seed,
                                    progress, log)  # fmt: skip
            ex_feats, template = _features(net, ref_list, ex_xy, w), _template(ref_list, ex_xy, w)
            save_checkpoint(picker_path, _picker_payload(net, config, ck, model_path, ex_feats, Path(exemplars),
                                                         stage1_info, pi, template, views,
                                                         [mics[i] for i in refs]))  # fmt: skip
    if not picker_path.exists():  # an earlier picker.pt as the model: its weights with these exemplars
        extra = {} if template is None else {"template": torch.from_numpy(template.copy())}
        if ex_df is not None:  # new exemplars: their file and reference micrographs
            extra["exemplars"] = _exemplars_entry(Path(exemplars), len(ex_feats), [mics[i] for i in refs])
        save_checkpoint(picker_path, {**ck, "exemplar_features": ex_feats.clone(), **extra, **_views_payload(views)})
    cand_dir, coord_dir = partial / "candidates", partial / "coordinates"
    cand_dir.mkdir(exist_ok=True)
    units = [WorkUnit(stem.removesuffix(".star"), f"micrograph {micrographs[k]}", pick_micrograph_unit,
                      (str(picker_path.resolve()), str(mic.resolve()), str(micrographs[k]), config),
                      cand_dir / coordinate_file_name(mic, "candidates"))
             for k, (mic, stem) in enumerate(zip(mics, stems, strict=True))]  # fmt: skip
    skipped = sum(u.done() for u in units)  # only a continued run has any
    runner_or_serial(runner).run(units, desc="picking", progress=progress)
    # the cut: every micrograph's candidates at its threshold (one for all with a pooled rule)
    cands = [read_star_table(u.out) for u in units]
    refs_given = sorted(set(ex_df["mic"])) if ex_df is not None else _stored_references(ck, mics)
    fit_on = [k for k in range(len(mics)) if k not in refs_given] or list(range(len(mics)))
    merits = [c["rlnAutopickFigureOfMerit"].to_numpy(float) for c in cands]
    thresholds = micrograph_thresholds(merits, config, is_fused(config, template, views), fit_on)
    rule = threshold_value(config.threshold)
    if rule in POOLED_RULES:
        log(f"threshold {thresholds[0]:.4g} ({rule}, fitted to the candidates of {len(fit_on)} micrograph(s)); "
            f"--threshold {thresholds[0]:.4g} cuts another batch the same way")  # fmt: skip
    coord_dir.mkdir(exist_ok=True)
    results = []
    for k, (c, thr) in enumerate(zip(cands, thresholds, strict=True)):
        table = cut_candidates(c, thr, config.max_picks)
        write_star(coord_dir / stems[k], {"": table}, force=True)
        results.append((str(micrographs[k]), table, headers[k][1]))
    previews = []
    for k in range(min(n_preview, len(mics)) if preview is not None else 0):  # the maps, computed again here
        img, ps = read_micrograph(mics[k], config.angpix)
        b = bin_micrograph(img, ps, config.work_diameter_A, d_px)
        v = _view_of(img, ps, views, config)
        r, maps = pick_one(net, b, ex_feats, config, str(micrographs[k]), template, views, v, threshold=thresholds[k])
        previews.append((mics[k], b, r, maps))
    cols = ["rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit",
            "rlnMicrographPixelSize"]  # fmt: skip
    frames = [pd.DataFrame({
        "rlnMicrographName": name, "rlnCoordinateX": t["rlnCoordinateX"].to_numpy(float),
        "rlnCoordinateY": t["rlnCoordinateY"].to_numpy(float),
        "rlnAutopickFigureOfMerit": t["rlnAutopickFigureOfMerit"].to_numpy(float), "rlnMicrographPixelSize": ps})
        for name, t, ps in results if len(t)]  # fmt: skip
    allp = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
    write_star(partial / "picks.star", allp, force=True)
    written = _write_previews(previews, preview, truth_df, config, force) if preview else []
    _finish(partial, outdir)
    return PickSummary(len(mics), len(allp), outdir, outdir / "picks.star", outdir / "picker.pt", stage1_info, pi,
                       skipped, written)  # fmt: skip


def _load_picker(path: str, *_key) -> tuple[PickerMAE, torch.Tensor, np.ndarray | None, ViewReference | None]:
    from cryoshot.utils import workunits

    net, ck = load_mae(Path(path))
    return (
        (net.to(workunits.DEVICE) if workunits.DEVICE != "cpu" else net),
        ck["exemplar_features"],
        _stored_template(ck),
        _stored_views(ck),
    )


def pick_micrograph_unit(picker_path: str, mic: str, name: str, config: PickConfig, *, out: Path) -> None:
    """Work unit: stage 2 on one micrograph with a ``picker.pt``, all but the threshold (which needs every
    micrograph's candidates); writes every candidate (input pixels, best first, with its figure of merit) to the
    STAR file ``out``."""
    net, ex_feats, template, views = cached(_load_picker, *file_key(picker_path))  # once per process
    img, ps = read_micrograph(Path(mic), config.angpix)
    b = bin_micrograph(img, ps, config.work_diameter_A, net.config.particle_px)
    v = _view_of(img, ps, views, config)
    del img
    xy, merit, _, _ = score_candidates(net, b, ex_feats, config, template, views, v)
    xin = b.to_input(xy)
    table = pd.DataFrame({"rlnCoordinateX": xin[:, 0], "rlnCoordinateY": xin[:, 1],
                          "rlnAutopickFigureOfMerit": np.asarray(merit, float)})  # fmt: skip
    write_star(out, {"": table}, force=True)


def is_fused(cfg: PickConfig, template: np.ndarray | None, views: ViewReference | None) -> bool:
    """Whether a picker's scores are the fused figure of merit (else the MAE's cosine, which thresholds
    see as Fisher's z); as :func:`rank_by_merit` decides it."""
    return (template is not None and cfg.template_weight > 0) or (views is not None and cfg.view_weight > 0)


def micrograph_thresholds(merits: list[np.ndarray], cfg: PickConfig, fused: bool, fit_on: list[int]) -> list[float]:
    """The threshold of each micrograph from its candidates' scores (``merits``, one (N_i,) array each).

    A score given as ``--threshold`` is every micrograph's; a pooled rule (``auto``) is fitted once to
    the candidates of the micrographs ``fit_on`` (those that are not a reference: there the exemplars
    match themselves) and applies to all; any other rule is fitted to each micrograph alone.
    """
    rule = threshold_value(cfg.threshold)
    if isinstance(rule, float):
        return [rule] * len(merits)
    return rule_thresholds(merits, rule, fisher=not fused, fit_on=fit_on, seed=cfg.seed)


def cut_candidates(cands: pd.DataFrame, threshold: float, max_picks: int | None) -> pd.DataFrame:
    """One micrograph's candidates (best first) at and above ``threshold``, at most ``max_picks``: its autopick
    table (RELION's columns)."""
    kept = cands[cands["rlnAutopickFigureOfMerit"].to_numpy(float) >= threshold]
    kept = kept.iloc[:max_picks] if max_picks is not None else kept
    n = len(kept)
    return pd.DataFrame({
        "rlnCoordinateX": kept["rlnCoordinateX"].to_numpy(float), "rlnCoordinateY": kept["rlnCoordinateY"].to_numpy(float),
        "rlnClassNumber": np.zeros(n, int), "rlnAutopickFigureOfMerit": kept["rlnAutopickFigureOfMerit"].to_numpy(float),
        "rlnAnglePsi": np.full(n, -999.0)})  # fmt: skip


def _view_of(img: np.ndarray, pixel_size_A: float, views: ViewReference | None, cfg: PickConfig) -> ViewImage | None:
    """The micrograph at the Siamese network's pixel size, when its view opinion is used (else None)."""
    return (
        view_image(img, pixel_size_A, views.net, cfg.work_diameter_A, views.view_pixel_A)
        if views is not None and cfg.view_weight > 0
        else None
    )


def _exemplars_on(ex_xy: list, i: int) -> np.ndarray:
    """(n, 2) binned coordinates of the exemplars on reference micrograph ``i`` (``ex_xy``: (i, x, y) tuples)."""
    return np.array([(x, y) for j, x, y in ex_xy if j == i]).reshape(-1, 2)


def _features(net: PickerMAE, refs: list[BinnedMicrograph], ex_xy: list, w: int) -> torch.Tensor:
    """Unit-norm exemplar features, each centred on its own reference micrograph's background."""
    out = []
    for i, ref in enumerate(refs):
        xy = _exemplars_on(ex_xy, i)
        if len(xy):
            out.append(exemplar_features(net, ref.image, xy))
    return torch.cat(out)


def _template(refs: list[BinnedMicrograph], ex_xy: list, w: int) -> np.ndarray:
    """The exemplars' rotationally averaged template, from their windows on the reference micrograph(s)."""
    return exemplar_template(np.concatenate([windows_at(ref.image, _exemplars_on(ex_xy, i), w)
                                             for i, ref in enumerate(refs)]))  # fmt: skip


def _stored_template(ck: dict) -> np.ndarray | None:
    """A picker.pt's template (None in a file written before templates were kept: cosine scores only)."""
    t = ck.get("template")
    return None if t is None else t.numpy()


def score_candidates(
    net: PickerMAE,
    b: BinnedMicrograph,
    ex_feats: torch.Tensor,
    cfg: PickConfig,
    template: np.ndarray | None = None,
    views: ViewReference | None = None,
    view: ViewImage | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple, bool]:
    """Stage 2 before the threshold: scan, suppress, then rank the peaks by the figure of merit.

    Parameters
    ----------
    b : the micrograph on the picker's scale
    template : (W, W) the exemplars' template; its NCC is an opinion when ``cfg.template_weight`` > 0
    views, view : the Siamese network's exemplar embeddings and this micrograph at its pixel size; an
        opinion when ``cfg.view_weight`` > 0

    Returns
    -------
    xy : (N, 2) binned coordinates, best first
    merit : (N,) figure of merit (``picking.merit.fuse_scores``), or the cosine when no other opinion is used
    maps : the cosine score map and its window centres (see ``candidate_picks``)
    fused : whether ``merit`` is the fused figure of merit (thresholds then take it as it is)
    """
    xy, s, maps = candidate_picks(net, b.image, ex_feats, cfg.stride_px, cfg.nms_distance, cfg.matching)
    nms_px = cfg.nms_distance * net.config.particle_px
    xy, merit, fused = rank_by_merit(b, xy, s, cfg, template, views, view, nms_px=nms_px)
    return xy, merit, maps, fused


def rank_by_merit(
    b: BinnedMicrograph,
    xy: np.ndarray,
    cosine: np.ndarray,
    cfg: PickConfig,
    template: np.ndarray | None = None,
    views: ViewReference | None = None,
    view: ViewImage | None = None,
    *,
    nms_px: float,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Re-rank one micrograph's peaks (binned ``xy`` (N, 2), MAE ``cosine`` (N,)) by the figure of merit.

    With the view opinion, each peak first moves to where the Siamese network sees the exemplars'
    particle best (:func:`~cryoshot.picking.views.view_search`), the template's NCC is read there,
    and peaks that came closer than ``nms_px`` (binned px) to a better one are dropped.

    Returns (xy, merit, fused), best first; without other opinions the cosine order is kept and
    ``fused`` is False.
    """
    opinions = []
    moved = False
    if views is not None and view is not None and cfg.view_weight > 0 and len(xy):
        xin, vs = view_search(views, view, b.to_input(xy), cfg.view_shift_px)
        xy, moved = b.to_binned(xin), cfg.view_shift_px > 0
        opinions.append((vs, cfg.view_weight))
    if template is not None and cfg.template_weight > 0:
        opinions.append((ncc_at(ncc_map(b.image, template), xy), cfg.template_weight))
    if not opinions or not len(cosine):
        return xy, cosine, bool(opinions)
    merit = fuse_scores(cosine, opinions)
    order = np.argsort(-merit, kind="stable")
    xy, merit = xy[order], merit[order]
    if moved:
        keep = greedy_nms(xy, nms_px)
        xy, merit = xy[keep], merit[keep]
    return xy, merit, True


def pick_one(
    net: PickerMAE,
    b: BinnedMicrograph,
    ex_feats: torch.Tensor,
    cfg: PickConfig,
    name: str = "",
    template: np.ndarray | None = None,
    views: ViewReference | None = None,
    view: ViewImage | None = None,
    *,
    threshold: float,
) -> tuple[MicrographPicks, tuple]:
    """Stage 2 on one binned micrograph: :func:`score_candidates`, then ``threshold`` (the run's, from
    :func:`micrograph_thresholds`); input pixels."""
    xy, s, maps, _ = score_candidates(net, b, ex_feats, cfg, template, views, view)
    keep = s >= threshold
    xy, s_kept = xy[keep], s[keep]
    if cfg.max_picks is not None:
        xy, s_kept = xy[: cfg.max_picks], s_kept[: cfg.max_picks]
    return MicrographPicks(name, b.to_input(xy), s_kept, threshold, len(s)), maps


def _prepare_partial(partial: Path, outdir: Path, settings: dict, continue_: bool, log) -> bool:
    """Create (or, continuing, check and reuse) the progress folder; True when created now.

    Continuing a finished run (``outdir`` exists) starts from its files, so it can be extended.
    """
    fresh = prepare_partial(partial, settings, continue_, log, mark=PARTIAL_MARK)
    if fresh and continue_ and outdir.exists():
        if (outdir / "picker.pt").exists():
            shutil.copy2(outdir / "picker.pt", partial / "picker.pt")
        if (outdir / "candidates").is_dir():
            shutil.copytree(outdir / "candidates", partial / "candidates")
    return fresh


def _finish(partial: Path, outdir: Path) -> None:
    """Move the finished files into ``outdir`` atomically, then drop the progress folder."""
    with atomic_dir(outdir, force=True) as tmp:
        shutil.copytree(partial / "coordinates", tmp / "coordinates")
        shutil.copytree(partial / "candidates", tmp / "candidates")
        for f in ("picks.star", "picker.pt"):
            if (partial / f).exists():
                shutil.copy2(partial / f, tmp / f)
    shutil.rmtree(partial, ignore_errors=True)


def _write_previews(previews, folder, truth_df, cfg: PickConfig, force: bool) -> list[Path]:
    from cryoshot.plotting import pick_preview

    paths = []
    with atomic_dir(folder, force=force) as tmp:
        for mic, b, r, (scores, xs, ys) in previews:
            hit = None
            if truth_df is not None and "rlnMicrographName" in truth_df.columns:
                rows = truth_df[[Path(str(n)).name == mic.name for n in truth_df["rlnMicrographName"]]]
                t_xy = rows[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float)
                hit = match_picks(r.xy, t_xy, cfg.diameter_A / b.pixel_size_A, r.score)
            name = mic.name.rsplit(".", 1)[0] + "_picks.png"
            pick_preview(b.image, b.to_binned(r.xy), cfg.diameter_A / b.pixel_size_A / b.factor, scores, xs, ys,
                         tmp / name, hit=hit, title=f"{mic.name}: {len(r.xy)} picks, threshold {r.threshold:.3f}")  # fmt: skip
            paths.append(Path(folder) / name)
    return paths
