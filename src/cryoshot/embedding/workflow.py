"""``cryoshot embed`` and ``cryoshot cluster``: 2D particle images -> embeddings, clusters, class averages, plots.

``cluster`` reads a particle STAR file, embeds every image with the Siamese network
(or runs the classical MRA baseline), picks k from the elbow (kneedle) unless given,
clusters with k-means, aligns and averages each cluster, and writes RELION-style outputs:
``particles.star`` (every input column, the cluster in ``rlnClassNumber``),
``class_averages.mrcs``, the embeddings, and the thesis's figures (t-SNE, elbow,
class-against-class cosine similarity, class averages).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cryoshot.data.particles2d import CTFParams, prepare_images
from cryoshot.embedding.align2d import aligned_average, apply_alignment, rotational_invariants
from cryoshot.embedding.cluster import (
    agreement,
    check_k,
    cluster_features,
    kmeans,
    reduce_dimensions,
    similarity_matrix,
)
from cryoshot.embedding.merge import merge_classes
from cryoshot.embedding.mra import MRAConfig, mra_classify
from cryoshot.errors import CryoshotError
from cryoshot.io.images2d import ParticleImages, load_particle_images, read_particle_table
from cryoshot.io.mrc import write_mrc
from cryoshot.io.star import write_star
from cryoshot.utils.files import atomic_dir, check_output_free
from cryoshot.utils.hashing import file_sha256
from cryoshot.utils.workunits import (
    Runner,
    WorkUnit,
    cached,
    chunks,
    file_key,
    progress_folder,
    runner_or_serial,
    save_array,
)

CLUSTER_METHODS = ("siamese", "mra")
CTF_MODES = ("auto", "flip", "none")
INPUT_CLASS_COLUMN = "cryoshotInputClassNumber"


# --k auto: over-cluster at max(3 k, k + 6) from the elbow's k, then merge (embedding/merge.py); 3 chosen
# over 2 on training structures (benchmarks/choose_merge_k.py: same on 600-image sets, better on 6,000).
MERGE_OVER = 3


@dataclass
class ClusterConfig:
    """Settings of ``cryoshot cluster`` (units in the names)."""

    k: int | None = None
    method: str = "siamese"
    ctf: str = "auto"
    angpix: float | None = None
    k_max: int | None = None
    pca_components: int = 50
    tsne_max_points: int = 3000
    average_iterations: int = 3
    max_shift_px: int = 4
    refine_iterations: int = 3  # chosen on training structures (benchmarks/choose_refinement.py)
    refine_box_px: int = 32
    refine_fine: bool = True  # coarse search at refine_box_px, fine search on the full images
    merge_k: bool = True  # --k auto with refinement: over-cluster, then merge classes whose averages agree
    mra: MRAConfig = field(default_factory=MRAConfig)
    seed: int = 0

    def validate(self) -> None:
        if self.method not in CLUSTER_METHODS:
            raise CryoshotError(f"unknown method '{self.method}'; choose {' or '.join(CLUSTER_METHODS)}")
        if self.ctf not in CTF_MODES:
            raise CryoshotError(f"--ctf must be one of {', '.join(CTF_MODES)}, got '{self.ctf}'")
        if self.k is not None and self.k < 2:
            raise CryoshotError(f"--k {self.k} is not a clustering: use at least 2 clusters, or --k auto")

    def refine_mra(self) -> MRAConfig:
        """The MRA settings of the refinement that starts from the embedding's clusters."""
        return MRAConfig(**{**asdict(self.mra), "iterations": self.refine_iterations,
                            "work_box_px": self.refine_box_px, "fine_search": self.refine_fine,
                            "seed": self.seed})  # fmt: skip


def _ctf_params(p: ParticleImages, mode: str) -> CTFParams | None:
    if mode == "none":
        return None
    if p.ctf is None:
        if mode == "flip":
            raise CryoshotError(f"--ctf flip needs defocus columns (rlnDefocusU) in {p.star_path}; they are missing")
        return None
    c = p.ctf
    return CTFParams(c["defocus_u_A"] / 1e4, c["defocus_v_A"] / 1e4, c["angle_deg"], c["voltage_kv"], c["cs_mm"],
                     c["amplitude_contrast"])  # fmt: skip


# images per forward pass; work units are multiples of it, so results do not depend on them. 256 keeps
# the activations in cache: about 2x the images per second of 1024 on 2 cores, same embeddings
EMBED_BATCH = 256


def embed_images(net, prepared: np.ndarray, *, chunk: int = EMBED_BATCH, progress: bool = True) -> np.ndarray:
    """Embeddings (N, E) float32 of (N, D, D) prepared images (eval mode, no gradients; on the net's device)."""
    from tqdm.auto import tqdm

    net.eval()
    dev = next(net.parameters()).device
    out = []
    with torch.inference_mode():
        for s in tqdm(range(0, len(prepared), chunk), desc="embedding", unit="batch", disable=not progress,
                      leave=False):  # fmt: skip
            out.append(net(torch.from_numpy(prepared[s : s + chunk])[:, None].to(dev)).float().cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def embed_particle_images(p: ParticleImages, net, ctf: str = "auto", progress: bool = True) -> np.ndarray:
    """Embeddings (N, E) of loaded particles with a Siamese network (images resampled to its grid)."""
    prepared = prepare_images(p.images, p.pixel_size_A, net.cfg.box_px, net.cfg.pixel_size_A, _ctf_params(p, ctf))
    return embed_images(net, prepared, progress=progress)


def _siamese_for(path: str, *_key):
    from cryoshot.models.siamese2d import load_siamese
    from cryoshot.utils import workunits

    net, _ = load_siamese(path)
    return net.to(workunits.DEVICE) if workunits.DEVICE != "cpu" else net


def embed_rows_unit(model_path: str, star: str, angpix: float | None, ctf: str, rows: tuple[int, int], *,
                    out: Path) -> None:  # fmt: skip
    """Work unit: embeddings (``.npy``, (rows, E)) of particle rows ``[start, stop)`` of ``star``."""
    net = cached(_siamese_for, model_path, *file_key(model_path))  # once per process
    p = load_particle_images(star, angpix=angpix, progress=False, rows=rows)
    save_array(out, embed_particle_images(p, net, ctf, progress=False))


def embed_star_rows(
    star: str | os.PathLike, model_path: str | os.PathLike, n_rows: int, folder: Path, *, ctf: str = "auto",
    angpix: float | None = None, runner: Runner | None = None, unit_rows: int = 4096,
    progress: bool = True,
) -> np.ndarray:  # fmt: skip
    """Embeddings (N, E) of the ``n_rows`` particles of ``star``, computed in work units with results in ``folder``.

    Units already in ``folder`` (a continued run) are not computed again.
    """
    size = EMBED_BATCH * max(1, -(-unit_rows // EMBED_BATCH))
    args = (str(Path(model_path).resolve()), str(Path(star).resolve()), angpix, ctf)
    units = [WorkUnit(f"embed_{a:09d}", f"particles {a + 1}..{b} of {star}", embed_rows_unit, (*args, (a, b)),
                      folder / f"embed_{a:09d}.npy") for a, b in chunks(n_rows, size)]  # fmt: skip
    runner_or_serial(runner).run(units, desc="embedding", progress=progress)
    return np.concatenate([np.load(u.out) for u in units])


@dataclass
class ClusterResult:
    """What ``cluster_particles`` did: the chosen k, labels, timings, agreement with known labels, and the
    iterations of multi-reference alignment run (the refinement's, or MRA's)."""

    k: int
    k_auto: int | None
    method: str
    labels: np.ndarray
    seconds: float
    seconds_cluster: float
    ari: float | None = None
    nmi: float | None = None
    outdir: Path | None = None
    files: list[str] = field(default_factory=list)
    alignment_iterations: int = 0
    merge: dict | None = None  # automatic k by merging over-clustered classes: k_over, k, applied, reliability

    def summary(self) -> dict:
        d = {"k": self.k, "k_auto": self.k_auto, "method": self.method, "seconds": self.seconds,
             "alignment_iterations": self.alignment_iterations, "merge": self.merge,
             "seconds_cluster": self.seconds_cluster, "n_particles": int(len(self.labels)),
             "cluster_sizes": np.bincount(self.labels, minlength=self.k).tolist(),
             "outdir": str(self.outdir) if self.outdir else None}  # fmt: skip
        if self.ari is not None:
            d.update(ari=self.ari, nmi=self.nmi)
        return d


def cluster_images(
    p: ParticleImages,
    cfg: ClusterConfig,
    *,
    net=None,
    embeddings: np.ndarray | None = None,
    progress: bool = True,
) -> tuple[ClusterResult, dict]:
    """Cluster loaded particle images (``net``: the Siamese network, for ``method="siamese"``).

    ``embeddings`` (N, E): the network's embeddings of these images, computed elsewhere
    (work units); else they are computed here with ``net``.

    Returns the result and the arrays the outputs are made of.
    """
    cfg.validate()
    check_k(cfg.k, len(p))
    t0 = time.perf_counter()
    ctf = _ctf_params(p, cfg.ctf)
    extra: dict = {}
    iterations = 0
    if cfg.method == "siamese":
        if net is None and embeddings is None:
            raise CryoshotError("method siamese needs a Siamese network (net=load_siamese(path)[0])")
        raw = None
        if cfg.refine_iterations > 0:  # the refinement's images; the embedding's too when the grids agree
            raw = prepare_images(p.images, p.pixel_size_A, p.box, p.pixel_size_A, ctf)
        same_grid = p.box == net.cfg.box_px and abs(p.pixel_size_A - net.cfg.pixel_size_A) < 1e-4 if net else False
        if embeddings is not None:
            z = embeddings
        elif raw is not None and same_grid:
            z = embed_images(net, raw, progress=progress)
        else:
            z = embed_particle_images(p, net, cfg.ctf, progress)
        feats = reduce_dimensions(z, cfg.pca_components, cfg.seed)
        cl = cluster_features(feats, cfg.k, k_max=cfg.k_max, seed=cfg.seed)
        labels, k_auto, ks, inertia = cl.labels, cl.k_auto, cl.ks, cl.inertia
        extra["embeddings"] = z
        k_used = cl.k
        if raw is not None:  # MRA started from the embedding's clusters: a few cheap iterations
            mcfg = cfg.refine_mra()
            res = None
            if cfg.k is None and cfg.merge_k:  # over-cluster, refine, merge the classes that show the same thing
                res, k_merged, extra["merge"] = _refine_and_merge(raw, feats, k_used, mcfg, cfg.seed, progress)
                k_used = k_merged if res is not None else k_used
            if res is None:
                res = mra_classify(raw, k_used, mcfg, progress=progress, init_labels=labels)
            labels, iterations = res.labels, res.iterations
            # merged classes get their averages made again (their members were aligned to several references)
            extra["mra_averages"] = res.averages if len(res.averages) == k_used else None
    else:
        prepared = prepare_images(p.images, p.pixel_size_A, p.box, p.pixel_size_A, ctf)
        k_auto = ks = inertia = None
        k = cfg.k
        if k is None:  # the elbow of rotation-invariant features (the MRA itself needs K)
            cl = cluster_features(reduce_dimensions(rotational_invariants(prepared), cfg.pca_components, cfg.seed),
                                  None, k_max=cfg.k_max, seed=cfg.seed)  # fmt: skip
            k, k_auto, ks, inertia = cl.k, cl.k_auto, cl.ks, cl.inertia
        res = mra_classify(prepared, k, MRAConfig(**{**asdict(cfg.mra), "seed": cfg.seed}), progress=progress)
        labels, iterations = res.labels, res.iterations
        k_used = k
        extra["mra_averages"] = res.averages
        z = rotational_invariants(prepared)
        extra["embeddings"] = z
    seconds_cluster = time.perf_counter() - t0
    out = ClusterResult(k=int(k_used), k_auto=k_auto, method=cfg.method, labels=labels, seconds=0.0,
                        seconds_cluster=seconds_cluster, alignment_iterations=int(iterations),
                        merge=extra.get("merge"))  # fmt: skip
    if p.labels is not None:
        a = agreement(p.labels, labels)
        out.ari, out.nmi = a["ari"], a["nmi"]
    extra.update(ks=ks, inertia=inertia, prepared_ctf=ctf)
    return out, extra


def over_cluster(raw: np.ndarray, feats: np.ndarray, k_elbow: int, mcfg: MRAConfig, seed: int, progress: bool,
                 factor: float = MERGE_OVER):  # fmt: skip
    """Refine max(factor k, k + 2 factor) classes (at most one per 5 images) started from k-means on ``feats``.

    Returns the refinement and the images (N, D, D) aligned to their classes, or None when that is not
    more classes than the elbow's ``k_elbow``.
    """
    k_over = int(min(len(raw) // 5, max(factor * k_elbow, k_elbow + 2 * factor)))
    if k_over <= k_elbow:
        return None
    over = mra_classify(raw, k_over, mcfg, progress=progress, init_labels=kmeans(feats, k_over, seed)[0])
    x = torch.from_numpy(np.asarray(raw, np.float32))
    aligned = apply_alignment(x, torch.from_numpy(over.alignment.angle_deg), torch.from_numpy(over.alignment.shift_px))
    return over, aligned.numpy()


def _refine_and_merge(raw: np.ndarray, feats: np.ndarray, k_elbow: int, mcfg: MRAConfig, seed: int,
                      progress: bool) -> tuple[object | None, int, dict | None]:  # fmt: skip
    """Refine max(3k, k + 6) classes and merge those that show the same thing (``embedding/merge.py``).

    Returns the refinement with the merged labels and k, or ``(None, k_elbow, info)`` when the
    classes were too noisy to judge (or all merged into one): then the caller refines at the elbow's k.
    """
    done = over_cluster(raw, feats, k_elbow, mcfg, seed, progress)
    if done is None:
        return None, k_elbow, None
    over, aligned = done
    k_over = len(over.averages)
    mg = merge_classes(aligned, over.labels, k_over)
    applied = mg.reliable and mg.k >= 2
    info = {"k_over": k_over, "k": mg.k, "applied": applied, "median_reliability": float(np.median(mg.reliability))}
    if not applied:
        return None, k_elbow, info
    over.labels = mg.groups[over.labels]
    return over, mg.k, info


MAX_AVERAGED = 500  # images aligned per class average: plenty for a sharp average, bounded time


def _aligned_group_average(p: ParticleImages, members: np.ndarray, z: np.ndarray | None, ctf, cfg: ClusterConfig,
                           rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """Aligned average (D, D) of the images ``members`` (at most MAX_AVERAGED of them, drawn at random)."""
    if len(members) > MAX_AVERAGED:
        members = np.sort(rng.choice(members, MAX_AVERAGED, replace=False))
    imgs = prepare_images(p.images[members], p.pixel_size_A, p.box, p.pixel_size_A,
                          None if ctf is None else ctf.subset(members))  # fmt: skip
    seed_index = 0
    if z is not None:  # the most typical member (closest to the mean embedding) starts the reference
        zc = z[members] / np.maximum(np.linalg.norm(z[members], axis=1, keepdims=True), 1e-12)
        seed_index = int(np.argmax(zc @ zc.mean(0)))
    avg, _ = aligned_average(imgs, seed_index=seed_index, iterations=cfg.average_iterations,
                             max_shift_px=cfg.max_shift_px)  # fmt: skip
    return avg


def _class_averages(p: ParticleImages, labels: np.ndarray, k: int, z: np.ndarray, cfg: ClusterConfig, ctf,
                    progress: bool) -> np.ndarray:  # fmt: skip
    """Aligned average of each cluster on the input grid (phase-flipped when the CTF is known). (k, D, D)."""
    from tqdm.auto import tqdm

    out = np.zeros((k, p.box, p.box), np.float32)
    rng = np.random.default_rng([cfg.seed, 41])
    for c in tqdm(range(k), desc="class averages", unit="class", disable=not progress, leave=False):
        members = np.nonzero(labels == c)[0]
        if len(members):
            out[c] = _aligned_group_average(p, members, z, ctf, cfg, rng)
    return out


def _tsne(feats: np.ndarray, max_points: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """t-SNE (2D) of PCA-reduced features, on a random subset of at most ``max_points``; (xy, indices)."""
    from sklearn.manifold import TSNE

    n = len(feats)
    idx = np.arange(n) if n <= max_points else np.sort(np.random.default_rng(seed).choice(n, max_points, False))
    perplexity = float(min(30.0, max(2.0, (len(idx) - 1) / 3.0)))
    xy = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(feats[idx])
    return xy, idx


def cluster_particles(
    star: str | os.PathLike,
    outdir: str | os.PathLike,
    cfg: ClusterConfig = ClusterConfig(),
    *,
    model: str | os.PathLike | None = "default",
    label_column: str | None = None,
    force: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = lambda s: None,
    runner: Runner | None = None,
    continue_: bool = False,
) -> ClusterResult:
    """Cluster the particles of ``star`` into ``outdir`` (see the module docstring for the files).

    With a ``runner`` (``cryoshot.distributed``) the embedding step runs in work units on it
    (``continue_`` reuses finished units); clustering and averaging stay in this process.

    Raises
    ------
    CryoshotError
        Before any work: an existing ``outdir`` without ``force``, an unreadable STAR or
        stack, an index beyond a stack, mixed image sizes, a 3D volume, NaN images, k < 2,
        fewer images than clusters.
    """
    from cryoshot.plotting import class_average_figure, elbow_plot, scatter_2d, similarity_plot
    from cryoshot.pretrained import resolve_siamese_model

    cfg.validate()
    outdir = Path(outdir)
    check_output_free(outdir, force, folder=True)
    model_path = resolve_siamese_model(None if model is None else str(model)) if cfg.method == "siamese" else None
    net = None
    if model_path is not None:
        from cryoshot.models.siamese2d import load_siamese

        net, _ = load_siamese(model_path)  # a wrong model file fails before the images are read
    t0 = time.perf_counter()
    p = load_particle_images(star, label_column=label_column, angpix=cfg.angpix, progress=progress)
    check_k(cfg.k, len(p))
    log(f"read {len(p)} particle images of {p.box} x {p.box} px at {p.pixel_size_A:.3g} Å/px"
        + ("; phase-flipping with the STAR file's CTF" if _ctf_params(p, cfg.ctf) is not None else ""))  # fmt: skip
    z = None
    if runner is not None and net is not None:
        settings = {"model": file_sha256(model_path), "star": file_sha256(star), "ctf": cfg.ctf, "angpix": cfg.angpix}
        with progress_folder(outdir, settings, continue_) as partial:  # kept only if a unit fails
            z = embed_star_rows(star, model_path, len(p), partial, ctf=cfg.ctf, angpix=cfg.angpix, runner=runner,
                                progress=progress)  # fmt: skip
    res, extra = cluster_images(p, cfg, net=net, embeddings=z, progress=progress)
    k, labels, z = res.k, res.labels, extra["embeddings"]
    if extra.get("mra_averages") is not None:  # aligned averages of the final classes, from MRA or its refinement
        averages = extra["mra_averages"]
    else:
        averages = _class_averages(p, labels, k, z, cfg, extra["prepared_ctf"], progress)
    feats = reduce_dimensions(z, cfg.pca_components, cfg.seed)
    xy, tidx = _tsne(feats, cfg.tsne_max_points, cfg.seed)
    names, sim = similarity_matrix(z, p.labels if p.labels is not None else labels + 1)
    table = table_with_clusters(p.table, labels)
    fig_columns = _averages_columns(p, labels, k, averages, z, extra["prepared_ctf"], cfg, label_column)
    res.seconds = time.perf_counter() - t0
    res.outdir = outdir
    with atomic_dir(outdir, force=force) as tmp:
        blocks = {"optics": p.optics, "particles": table} if p.optics is not None else table
        write_star(tmp / "particles.star", blocks)
        write_mrc(tmp / "class_averages.mrcs", averages, p.pixel_size_A, stack=True)
        np.save(tmp / "embeddings.npy", z)
        scatter_2d(
            xy,
            labels[tidx] + 1,
            tmp / "tsne_clusters.png",
            title=f"t-SNE of the embeddings, k-means clusters (k = {k})",
        )
        if p.labels is not None:
            scatter_2d(xy, p.labels[tidx], tmp / "tsne_labels.png", title=f"t-SNE coloured by {label_column}")
        if extra.get("ks") is not None:
            elbow_plot(extra["ks"], extra["inertia"], int(res.k_auto), k, tmp / "elbow.png")
        similarity_plot(names, sim, tmp / "similarity.png",
                        title=f"mean cosine similarity, {label_column or 'cluster'} against {label_column or 'cluster'}")  # fmt: skip
        class_average_figure(fig_columns, tmp / "class_averages.png", suptitle="class averages")
        summary = res.summary()
        summary["model"] = None if model_path is None else f"{Path(model_path).name}:{file_sha256(model_path)[:12]}"
        (tmp / "summary.json").write_text(json.dumps(summary, indent=1))
        res.files = sorted(f.name for f in tmp.iterdir())
    return res


def _averages_columns(p: ParticleImages, labels, k, averages, z, ctf, cfg: ClusterConfig, label_column) -> list:
    """Thesis Fig. 6: a random subset's average, each known class's and each cluster's aligned average."""
    rng = np.random.default_rng([cfg.seed, 43])
    sub = rng.choice(len(p), min(len(p), 200), replace=False)
    rand = prepare_images(p.images[sub], p.pixel_size_A, p.box, p.pixel_size_A,
                          None if ctf is None else ctf.subset(sub)).mean(0)  # fmt: skip
    columns = [("random subset (unaligned)", [rand], [f"n={len(sub)}"])]
    show = min(k, 12)
    if p.labels is not None:
        lab = p.labels.astype(str)
        names = np.unique(lab)[:show]
        avgs = [_aligned_group_average(p, np.nonzero(lab == n)[0], z, ctf, cfg, rng) for n in names]
        columns.append((f"{label_column} (aligned)", avgs, [str(n) for n in names]))
    order = np.argsort(-np.bincount(labels, minlength=k))[:show]
    columns.append(("clusters (aligned)", [averages[c] for c in order],
                    [f"{c + 1}: n={int((labels == c).sum())}" for c in order]))  # fmt: skip
    return columns


def embed_particles(
    star: str | os.PathLike,
    outdir: str | os.PathLike,
    *,
    model: str | os.PathLike | None = "default",
    ctf: str = "auto",
    angpix: float | None = None,
    force: bool = False,
    progress: bool = True,
    runner: Runner | None = None,
    continue_: bool = False,
) -> tuple[Path, np.ndarray]:
    """Write ``embeddings.npy`` (row i = particle i of the STAR) and ``particles.star`` into ``outdir``.

    The particles are embedded in work units (``runner``: None for this process, or a
    ``cryoshot.distributed`` runner), whose results wait beside ``outdir`` until all are done;
    ``continue_`` reuses them after a failure or a kill.
    """
    from cryoshot.models.siamese2d import load_siamese
    from cryoshot.pretrained import resolve_siamese_model

    if ctf not in CTF_MODES:
        raise CryoshotError(f"--ctf must be one of {', '.join(CTF_MODES)}, got '{ctf}'")
    outdir = Path(outdir)
    check_output_free(outdir, force, folder=True)
    model_path = resolve_siamese_model(None if model is None else str(model))
    load_siamese(model_path)  # a wrong model file fails before any image is read
    table, optics = read_particle_table(star)
    p0 = load_particle_images(star, angpix=angpix, progress=False, rows=(0, 1))  # format errors before any unit
    _ctf_params(p0, ctf)
    settings = {"model": file_sha256(model_path), "star": file_sha256(star), "ctf": ctf, "angpix": angpix}
    with progress_folder(outdir, settings, continue_) as partial:
        z = embed_star_rows(star, model_path, len(table), partial, ctf=ctf, angpix=angpix, runner=runner,
                            progress=progress)  # fmt: skip
        with atomic_dir(outdir, force=force) as tmp:
            np.save(tmp / "embeddings.npy", z)
            write_star(tmp / "particles.star", {"optics": optics, "particles": table} if optics is not None else table)
    return outdir, z


def table_with_clusters(table: pd.DataFrame, labels: np.ndarray) -> pd.DataFrame:
    """The input table with clusters in ``rlnClassNumber`` (1-based); an input one kept as cryoshotInputClassNumber."""
    t = table.copy()
    if "rlnClassNumber" in t.columns:
        t[INPUT_CLASS_COLUMN] = t["rlnClassNumber"]
    t["rlnClassNumber"] = np.asarray(labels) + 1
    return t
