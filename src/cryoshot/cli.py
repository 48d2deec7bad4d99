"""The ``cryoshot`` command line: argument parsing only; each verb calls one library function."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from cryoshot import __version__
from cryoshot.cli_config import apply_config, record_run
from cryoshot.cli_distributed import DistOptions, distributed_options
from cryoshot.cli_types import SEED_MAX, choice, k_choice, key_values, parse_key_values, positive_list, real
from cryoshot.errors import CryoshotError
from cryoshot.fewshot.methods import METHOD_NAMES, methods_help
from cryoshot.utils.runrecord import current_run

METHODS_HELP = methods_help()  # from the one registry of methods
_method_choice = choice(METHOD_NAMES)


app = typer.Typer(
    name="cryoshot",
    help="Few-shot learning for cryo-EM and cryo-ET: classify subtomograms and pick particles "
    "from a handful of labels.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
simulate_app = typer.Typer(help="Simulate subtomograms, micrographs or projection images.", no_args_is_help=True)
app.add_typer(simulate_app, name="simulate")

Structures = Annotated[
    list[str],
    typer.Option(
        "--structures",
        "-s",
        help="Structures, repeated or comma-separated: bundled names (see `cryoshot structures`), "
        "'bundled', .mrc maps, .pdb/.cif models, procedural:K or procedural:A-B.",
    ),
]
Out = Annotated[Path, typer.Option("--outdir", "-o", help="Output folder (must not exist unless --force).")]
Force = Annotated[bool, typer.Option("--force", help="Replace an existing output.")]
Seed = Annotated[
    int, typer.Option("--seed", min=0, max=SEED_MAX, help="Random seed; item i depends only on (seed, i).")
]
Angpix = Annotated[float, typer.Option("--angpix", parser=real(0, 1000, lo_open=True), help="Pixel size (Å).")]
AngpixOverride = Annotated[
    float | None,
    typer.Option("--angpix", parser=real(0, 1000, lo_open=True), help="Pixel size (Å), overriding the headers."),
]
Snr = Annotated[float, typer.Option("--snr", parser=real(0, lo_open=True), help="Target SNR, var(signal)/var(noise).")]
DefocusMin = Annotated[
    float, typer.Option("--defocus-min", parser=real(0, 100), help="Lowest defocus (µm, underfocus > 0).")
]
Voltage = Annotated[float, typer.Option("--voltage", parser=real(1, 3000), help="Acceleration voltage (kV).")]
Cs = Annotated[float, typer.Option("--cs", parser=real(0, 100), help="Spherical aberration (mm).")]
AmplitudeContrast = Annotated[
    float,
    typer.Option("--amplitude-contrast", parser=real(0, 1, hi_open=True), help="Amplitude contrast fraction."),
]
BFactor = Annotated[
    float, typer.Option("--b-factor", parser=real(0, 10_000), help="Envelope B-factor (Å²), exp(-B k² / 4).")
]
DefocusMax = Annotated[float, typer.Option("--defocus-max", parser=real(0, 100), help="Highest defocus (µm).")]
Preview = Annotated[Path | None, typer.Option("--preview", help="Write a PNG montage of what was made.")]
Rotations = Annotated[
    int | None,
    typer.Option(
        "--rotations",
        parser=lambda text: int(choice(("1", "2", "4"))(text)),
        help="Average each subtomogram's embedding over 1, 2 or 4 of the wedge-preserving 180° rotations "
        "(default 4: the most accurate; 1 is about 1.7x faster end to end).",
        show_default=False,
    ),
]
Invert = Annotated[bool, typer.Option("--invert", help="Protein dark (raw-data contrast) instead of bright.")]
StructuralNoise = Annotated[
    float,
    typer.Option("--structural-noise", parser=real(0, 1),
                 help="Share of the noise variance imaged through the CTF, as ice and solvent are (0: white noise)."),
]  # fmt: skip
MtfNyquist = Annotated[
    float,
    typer.Option("--mtf-nyquist", parser=real(0, 1, lo_open=True),
                 help="The detector's MTF at Nyquist (1: a perfect detector; counting detectors about 0.6)."),
]  # fmt: skip
SaveClean = Annotated[bool, typer.Option("--save-clean", help="Also write the noise-free data (_clean).")]
ForceSize = Annotated[
    bool,
    typer.Option("--force-size", help="Run even when the estimated memory or disk exceeds what is available."),
]


def _split(values: list[str]) -> list[str]:
    out = [v.strip() for item in values for v in item.split(",") if v.strip()]
    if not out:
        raise CryoshotError("the structure list is empty: pass --structures, e.g. -s 1bxn,2cg9 or -s procedural:0-10")
    return out


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cryoshot {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the full traceback of an internal error (also CRYOSHOT_DEBUG=1).")
    ] = False,
) -> None:
    """cryoshot command line. Every verb also takes --config run.yaml (its options as YAML keys; flags
    override the file) and writes run.yaml, its resolved settings, into every output folder."""


@app.command("structures")
def structures_cmd() -> None:
    """List the density maps bundled with cryoshot (PDB IDs, 10 Å/voxel)."""
    from cryoshot.simulate.splits import NOVEL_STRUCTURES, TRAIN_STRUCTURES
    from cryoshot.simulate.structures import bundled_structure_names

    for name in bundled_structure_names():
        role = "novel (held out)" if name in NOVEL_STRUCTURES else "training" if name in TRAIN_STRUCTURES else ""
        typer.echo(f"{name}\t{role}")


@simulate_app.command("subtomograms")
@distributed_options
def simulate_subtomograms(
    ctx: typer.Context,
    structures: Structures,
    outdir: Out,
    per_class: Annotated[int, typer.Option("--per-class", min=1, max=10**7, help="Subtomograms per structure.")] = 20,
    box: Annotated[int, typer.Option("--box", min=8, max=100_000, help="Box size (voxels).")] = 40,
    angpix: Angpix = 10.0,
    snr: Snr = 0.05,
    snr_convention: Annotated[
        str,
        typer.Option(
            "--snr-convention",
            parser=choice(("box", "projection")),
            help="box: var(signal)/var(noise) over the box (papers); projection: per tilt image.",
        ),
    ] = "box",
    tilt_min: Annotated[float, typer.Option("--tilt-min", parser=real(-90, 90), help="Lowest tilt (degrees).")] = -60.0,
    tilt_max: Annotated[float, typer.Option("--tilt-max", parser=real(-90, 90), help="Highest tilt (degrees).")] = 60.0,
    tilt_step: Annotated[
        float, typer.Option("--tilt-step", parser=real(0, 180, lo_open=True), help="Tilt increment (degrees).")
    ] = 3.0,
    dose: Annotated[
        float,
        typer.Option("--dose", parser=real(0, 10_000, lo_open=True), help="Total exposure of the tilt series (e/Å²)."),
    ] = 120.0,
    defocus_min: DefocusMin = 2.0,
    defocus_max: DefocusMax = 5.0,
    voltage: Voltage = 300.0,
    cs: Cs = 2.7,
    amplitude_contrast: AmplitudeContrast = 0.07,
    b_factor: BFactor = 0.0,
    max_shift: Annotated[
        float, typer.Option("--max-shift", parser=real(0), help="Largest random shift (voxels; less than box/4).")
    ] = 2.0,
    no_ctf: Annotated[bool, typer.Option("--no-ctf", help="Leave out the CTF.")] = False,
    no_wedge: Annotated[bool, typer.Option("--no-wedge", help="Leave out the missing wedge.")] = False,
    no_dose: Annotated[bool, typer.Option("--no-dose", help="Leave out dose weighting.")] = False,
    method: Annotated[
        str,
        typer.Option(
            "--method",
            parser=choice(("fast", "tiltseries")),
            help="fast (Fourier transfer function) or tiltseries (WBP, slow).",
        ),
    ] = "fast",
    invert: Invert = False,
    save_clean: SaveClean = False,
    preview: Preview = None,
    seed: Seed = 0,
    force: Force = False,
    force_size: ForceSize = False,
    dist: DistOptions = DistOptions(),
) -> None:
    """Simulate a labelled subtomogram set (one MRC per subtomogram plus particles.star)."""
    record_run(ctx)
    from cryoshot.simulate.optics import Microscope
    from cryoshot.simulate.subtomograms import SubtomogramConfig
    from cryoshot.simulate.workflow import simulate_subtomograms as run

    cfg = SubtomogramConfig(
        box_px=box, pixel_size_A=angpix, snr=snr, snr_convention=snr_convention, tilt_min_deg=tilt_min,
        tilt_max_deg=tilt_max, tilt_step_deg=tilt_step, dose_e_per_A2=dose, defocus_min_um=defocus_min,
        defocus_max_um=defocus_max, max_shift_px=max_shift,
        microscope=Microscope(voltage_kv=voltage, cs_mm=cs, amplitude_contrast=amplitude_contrast, b_factor_A2=b_factor), use_ctf=not no_ctf, use_wedge=not no_wedge, use_dose=not no_dose,
        invert=invert, method=method, seed=seed,
    )  # fmt: skip
    with dist.runner() as runner:
        out = run(_split(structures), outdir, cfg, per_class, save_clean=save_clean, preview=preview, force=force,
                  force_size=force_size, runner=runner, continue_=dist.continue_)  # fmt: skip
    typer.echo(f"wrote {out.n_items} subtomograms of {out.n_classes} structures ({box}^3 at {angpix} Å, SNR {snr}) "
               f"to {out.star}")  # fmt: skip
    if out.preview is not None:
        typer.echo(f"preview: {out.preview}")


@simulate_app.command("micrographs")
@distributed_options
def simulate_micrographs(
    ctx: typer.Context,
    structures: Structures,
    outdir: Out,
    n_micrographs: Annotated[
        int, typer.Option("--micrographs", "-n", min=1, max=10**6, help="Number of micrographs.")
    ] = 2,
    size: Annotated[int, typer.Option("--size", min=32, max=10**7, help="Micrograph size (pixels, square).")] = 1024,
    angpix: Angpix = 5.0,
    particle_box: Annotated[
        int, typer.Option("--particle-box", min=8, max=4096, help="Box for each particle's projection (pixels).")
    ] = 64,
    particles: Annotated[
        int, typer.Option("--particles", min=0, max=10**7, help="Particles per micrograph (fewer if they do not fit).")
    ] = 100,
    snr: Snr = 0.1,
    defocus_min: DefocusMin = 1.0,
    defocus_max: DefocusMax = 3.0,
    voltage: Voltage = 300.0,
    cs: Cs = 2.7,
    amplitude_contrast: AmplitudeContrast = 0.07,
    b_factor: BFactor = 0.0,
    ice_gradient: Annotated[
        float,
        typer.Option("--ice-gradient", parser=real(0, 1000), help="Slow background, in noise standard deviations."),
    ] = 0.5,
    ice_scale: Annotated[
        float | None,
        typer.Option(
            "--ice-scale",
            parser=real(2, 1e6),
            help="How far the slow background varies (px); default: a third of the micrograph.",
        ),
    ] = None,
    ice_blobs: Annotated[
        int, typer.Option("--ice-blobs", min=0, max=10_000, help="Ice contaminants per micrograph.")
    ] = 0,
    carbon_edge: Annotated[bool, typer.Option("--carbon-edge", help="Add a carbon edge.")] = False,
    ice_texture: Annotated[
        float,
        typer.Option(
            "--ice-texture",
            parser=real(0, 10),
            help="Amorphous ice's texture (a 1/k phase field through the CTF), its sd in noise sd (0: none).",
        ),
    ] = 0.0,  # fmt: skip
    structural_noise: StructuralNoise = 0.0,
    mtf_nyquist: MtfNyquist = 1.0,
    invert: Invert = False,
    save_clean: SaveClean = False,
    preview: Preview = None,
    seed: Seed = 0,
    force: Force = False,
    force_size: ForceSize = False,
    dist: DistOptions = DistOptions(),
) -> None:
    """Simulate micrographs with a ground-truth coordinate STAR file."""
    record_run(ctx)
    from cryoshot.simulate.micrographs import MicrographConfig
    from cryoshot.simulate.optics import Microscope
    from cryoshot.simulate.workflow import simulate_micrographs as run

    cfg = MicrographConfig(
        size_px=size, pixel_size_A=angpix, particle_box_px=particle_box, n_particles=particles, snr=snr,
        defocus_min_um=defocus_min, defocus_max_um=defocus_max, ice_gradient=ice_gradient,
        ice_gradient_scale_px=ice_scale, n_ice_blobs=ice_blobs, carbon_edge=carbon_edge, invert=invert, seed=seed,
        structural_noise=structural_noise, mtf_nyquist=mtf_nyquist, ice_texture=ice_texture,
        microscope=Microscope(voltage_kv=voltage, cs_mm=cs, amplitude_contrast=amplitude_contrast, b_factor_A2=b_factor),
    )  # fmt: skip
    with dist.runner() as runner:
        out = run(_split(structures), outdir, cfg, n_micrographs, save_clean=save_clean, preview=preview, force=force,
                  force_size=force_size, runner=runner, continue_=dist.continue_)  # fmt: skip
    typer.echo(f"wrote {n_micrographs} micrographs with {out.n_items} particles to {out.star}")
    if out.preview is not None:
        typer.echo(f"preview: {out.preview}")


@simulate_app.command("projections")
@distributed_options
def simulate_projections(
    ctx: typer.Context,
    structures: Structures,
    outdir: Out,
    views: Annotated[int, typer.Option("--views", min=1, max=100_000, help="Orientation classes per structure.")] = 4,
    per_class: Annotated[int, typer.Option("--per-class", min=1, max=10**7, help="Images per orientation class.")] = 20,
    box: Annotated[int, typer.Option("--box", min=8, max=100_000, help="Image size (pixels).")] = 64,
    angpix: Angpix = 5.0,
    snr: Snr = 0.1,
    jitter: Annotated[
        float, typer.Option("--jitter", parser=real(0, 180), help="Largest deviation from the class view (degrees).")
    ] = 5.0,
    inplane_rotation: Annotated[bool, typer.Option("--inplane-rotation", help="Random in-plane rotation.")] = False,
    defocus_min: DefocusMin = 1.0,
    defocus_max: DefocusMax = 3.0,
    voltage: Voltage = 300.0,
    cs: Cs = 2.7,
    amplitude_contrast: AmplitudeContrast = 0.07,
    b_factor: BFactor = 0.0,
    structural_noise: StructuralNoise = 0.0,
    mtf_nyquist: MtfNyquist = 1.0,
    invert: Invert = False,
    save_clean: SaveClean = False,
    preview: Preview = None,
    seed: Seed = 0,
    force: Force = False,
    force_size: ForceSize = False,
    dist: DistOptions = DistOptions(),
) -> None:
    """Simulate 2D particle images in orientation classes (an .mrcs stack plus particles.star)."""
    record_run(ctx)
    from cryoshot.simulate.optics import Microscope
    from cryoshot.simulate.projections import ProjectionConfig
    from cryoshot.simulate.workflow import simulate_projections as run

    cfg = ProjectionConfig(
        box_px=box, pixel_size_A=angpix, n_views=views, snr=snr, view_jitter_deg=jitter,
        inplane_rotation=inplane_rotation, defocus_min_um=defocus_min, defocus_max_um=defocus_max,
        invert=invert, seed=seed, structural_noise=structural_noise, mtf_nyquist=mtf_nyquist,
        microscope=Microscope(voltage_kv=voltage, cs_mm=cs, amplitude_contrast=amplitude_contrast, b_factor_A2=b_factor),
    )  # fmt: skip
    with dist.runner() as runner:
        out = run(_split(structures), outdir, cfg, per_class, save_clean=save_clean, preview=preview, force=force,
                  force_size=force_size, runner=runner, continue_=dist.continue_)  # fmt: skip
    typer.echo(f"wrote {out.n_items} images in {out.n_classes} orientation classes to {out.star}")
    if out.preview is not None:
        typer.echo(f"preview: {out.preview}")


@app.command("extract")
@distributed_options
def extract_cmd(
    ctx: typer.Context,
    coordinates: Annotated[Path, typer.Argument(help="STAR file with particle coordinates.")],
    outdir: Out,
    box: Annotated[int, typer.Option("--box", min=2, max=100_000, help="Box size (pixels).")],
    tomogram: Annotated[
        Path | None,
        typer.Option(
            "--tomogram",
            "--micrograph",
            help="Source MRC for every row (else rlnTomoName / rlnMicrographName).",
        ),
    ] = None,
    two_d: Annotated[bool, typer.Option("--2d", help="Cut 2D boxes from micrographs instead of subtomograms.")] = False,
    angpix: AngpixOverride = None,
    edge: Annotated[
        str,
        typer.Option(
            "--edge",
            parser=choice(("pad", "skip")),
            help="pad (fill with the box mean) or skip particles near the edge.",
        ),
    ] = "pad",
    invert: Annotated[bool, typer.Option("--invert", help="Multiply the boxes by -1.")] = False,
    force: Force = False,
    force_size: ForceSize = False,
    dist: DistOptions = DistOptions(),
) -> None:
    """Cut subtomograms (or 2D boxes) at STAR coordinates into a subtomogram (particle) set."""
    record_run(ctx)
    from cryoshot.io.extract import extract_particles

    with dist.runner() as runner:
        rep = extract_particles(
            coordinates, outdir, box, source=tomogram, dim=2 if two_d else 3, angpix=angpix, edge=edge,
            invert=invert, force=force, force_size=force_size, runner=runner, continue_=dist.continue_,
        )  # fmt: skip
    typer.echo(
        f"extracted {len(rep.table)} particles to {outdir}/particles.star "
        f"({rep.n_padded} padded at the edge, {rep.n_skipped} skipped)"
    )


@app.command("train")
def train_cmd(
    ctx: typer.Context,
    method: Annotated[
        str,
        typer.Argument(
            parser=choice(("protonet", "protonet-ce", "finetune", "fscc", "mae", "siamese")),
            help="protonet, protonet-ce (episodic); finetune (cross-entropy over base classes) or fscc "
            "(cross-entropy + λ supervised contrastive, then base-class statistics) on class-balanced batches "
            "of --batch-classes x --batch-items (default 32 x 4 = 128, the FSCC paper's batch); validation is WAY-way SHOT-shot episodes; "
            "mae: the particle picker's MAE on simulated micrographs (uses --episodes as steps, --time-budget, --lr, "
            "--procedural, --val-every, --device, --seed, --resume, --init-from, and --simulator "
            "ice_texture_max=SD,flatten=1); siamese: the 2D particle embedding (triplet loss) on "
            "simulated projections (uses --episodes as steps, --lr, --procedural, --val-every, --patience, --margin, "
            "--backbone, --backbone-weights, --structures, --init-from, and --simulator p_textured=P,p_neighbours=P,p_size_matched=P,max_shift_px=PX,p_unflipped=P).",
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model file to write (best on validation).")],
    encoder: Annotated[
        str,
        typer.Option(
            "--encoder",
            parser=choice(("cryoshot-small", "protonet3d-paper", "conv6-paper")),
            help="cryoshot-small, protonet3d-paper or conv6-paper (FSCC).",
        ),
    ] = "cryoshot-small",
    way: Annotated[int, typer.Option("--way", min=2, max=1000, help="Classes per episode (N).")] = 5,
    shot: Annotated[int, typer.Option("--shot", min=1, max=1000, help="Support examples per class (K).")] = 5,
    query: Annotated[int, typer.Option("--query", min=1, max=1000, help="Queries per class.")] = 15,
    episodes: Annotated[int, typer.Option("--episodes", min=1, max=10**9, help="Most training episodes.")] = 2000,
    time_budget: Annotated[
        float | None, typer.Option("--time-budget", parser=real(0, lo_open=True), help="Stop after this many seconds.")
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            "--lr", parser=real(0, 10, lo_open=True), help="Learning rate (default 1e-4, the paper's; mae 3e-4)."
        ),
    ] = None,
    procedural: Annotated[
        int, typer.Option("--procedural", min=0, max=1_000_000, help="Procedural training classes.")
    ] = 200,
    items_per_class: Annotated[
        int, typer.Option("--items-per-class", min=2, max=100_000, help="Pool items per class.")
    ] = 24,
    snrs: Annotated[
        str,
        typer.Option("--snrs", parser=positive_list, help="Comma-separated SNR levels mixed in training."),
    ] = "0.1,0.05,0.03",
    val_every: Annotated[int, typer.Option("--val-every", min=1, max=10**9, help="Validate every N episodes.")] = 100,
    simulator: Annotated[
        str | None,
        typer.Option(
            "--simulator",
            parser=key_values,
            help="Training-pool simulator settings, KEY=VALUE pairs separated by commas (fields of the subtomogram "
            "simulator, e.g. max_shift_px=5,tilt_min_deg=-45,microscope.b_factor_A2=200; per-particle variation: "
            "tilt_jitter_deg, b_factor_max_A2, neighbours, tiltseries_fraction); default: its defaults.",
        ),
    ] = None,
    init_from: Annotated[
        Path | None,
        typer.Option(
            "--init-from",
            help="protonet-ce: the trained model (protonet, finetune or fscc) whose encoder is frozen; "
            "mae, siamese: the model to continue from.",
        ),
    ] = None,
    supcon_weight: Annotated[
        float, typer.Option("--supcon-weight", parser=real(0, 1000), help="fscc: λ (paper: 0.05).")
    ] = 0.05,
    supcon_temperature: Annotated[
        float, typer.Option("--supcon-temperature", parser=real(0, 100, lo_open=True), help="fscc: τ (paper: 0.07).")
    ] = 0.07,
    stats_items: Annotated[
        int,
        typer.Option(
            "--stats-items", min=2, max=100_000, help="fscc: fresh items per base class for the base statistics."
        ),
    ] = 48,
    batch_classes: Annotated[
        int,
        typer.Option("--batch-classes", min=2, max=100_000, help="fscc/finetune: classes per class-balanced batch."),
    ] = 32,
    batch_items: Annotated[
        int, typer.Option("--batch-items", min=1, max=100_000, help="fscc/finetune: items per class in a batch.")
    ] = 4,
    margin: Annotated[
        float, typer.Option("--margin", parser=real(0, 10, lo_open=True), help="siamese: triplet margin m.")
    ] = 0.5,
    patience: Annotated[
        int,
        typer.Option("--patience", min=1, max=10_000, help="siamese: stop after N validations without a better loss."),
    ] = 5,
    backbone: Annotated[
        str,
        typer.Option(
            "--backbone",
            parser=choice(("polar", "resnet50")),
            help="siamese: polar (rotation-invariant, for noisy particles) or resnet50 (the thesis's).",
        ),
    ] = "polar",
    backbone_weights: Annotated[
        Path | None,
        typer.Option("--backbone-weights", help="siamese resnet50: torchvision-layout weights to start from (frozen)."),
    ] = None,
    structures: Annotated[
        list[str] | None,
        typer.Option(
            "--structures", "-s", help="siamese: training structures instead of procedural + the 8 training maps."
        ),
    ] = None,
    bf16: Annotated[bool, typer.Option("--bf16", help="bfloat16 autocast on CPU.")] = False,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="Continue a killed run from OUTPUT.last.")] = False,
    force: Force = False,
    seed: Seed = 0,
) -> None:
    """Train on simulated structures (procedural + the 8 bundled training maps); the best model on held-out classes is kept."""
    record_run(ctx)
    if method == "mae":
        from cryoshot.train.mae import MAETrainConfig, train_mae

        sim = parse_key_values(simulator)
        unknown = set(sim) - {"ice_texture_max", "flatten"}
        if unknown:
            raise CryoshotError(f"--simulator for mae takes ice_texture_max=SD and flatten=0/1, not {sorted(unknown)}")
        try:
            tex, flat = float(sim.get("ice_texture_max", 0)), bool(int(sim.get("flatten", 0)))
        except ValueError as e:
            raise CryoshotError(f"--simulator for mae: ice_texture_max=SD (a number), flatten=0 or 1 ({e})") from e
        mcfg = MAETrainConfig(steps=episodes, time_budget_s=time_budget, lr=3e-4 if lr is None else lr,
                              n_procedural=procedural, val_every=val_every, seed=seed, device=device,
                              ice_texture_max=tex, flatten=flat, init_from=str(init_from) if init_from else None)  # fmt: skip
        res = train_mae(mcfg, output, resume=resume, force=force)
        typer.echo(f"trained mae for {res['episodes']} steps in {res['seconds']:.0f} s; "
                   f"best validation AP {res['best_val_ap']:.3f} -> {output}")  # fmt: skip
        return
    if method == "siamese":
        from cryoshot.data.projection_triplets import SIMULATOR_KEYS, TripletDataConfig
        from cryoshot.models.siamese2d import SiameseConfig
        from cryoshot.train.siamese import SiameseTrainConfig, train_siamese

        sim = parse_key_values(simulator)
        keys = ", ".join(f"{k}={what}" for k, what in SIMULATOR_KEYS.items())
        if set(sim) - set(SIMULATOR_KEYS):
            raise CryoshotError(f"--simulator for siamese takes {keys}; not {sorted(set(sim) - set(SIMULATOR_KEYS))}")
        try:
            data = TripletDataConfig(**{k: float(v) for k, v in sim.items()})
        except ValueError as e:
            raise CryoshotError(f"--simulator for siamese: {keys} ({e})") from e
        scfg = SiameseTrainConfig(
            steps=episodes, time_budget_s=time_budget, lr=1e-4 if lr is None else lr, margin=margin,
            init_from=str(init_from) if init_from else None, data=data,
            n_procedural=procedural, structures=_split(structures) if structures else [], val_every=val_every, patience=patience,
            backbone_weights=str(backbone_weights) if backbone_weights else None,
            freeze_backbone=backbone_weights is not None, seed=seed, device=device,
            model=SiameseConfig(backbone=backbone),
        )  # fmt: skip
        res = train_siamese(scfg, output, resume=resume, force=force)
        typer.echo(f"trained siamese for {res['episodes']} steps in {res['seconds']:.0f} s; best validation loss "
                   f"{res['best_val_loss']:.4f} at step {res['best_episode']} -> {output}")  # fmt: skip
        return
    lr = 1e-4 if lr is None else lr
    from cryoshot.data.synthetic import PoolConfig
    from cryoshot.train.loop import TrainConfig, train

    snr_list = [float(v) for v in snrs.split(",") if v.strip()]
    cfg = TrainConfig(
        method=method, encoder=encoder, way=way, shot=shot, query=query, episodes=episodes,
        time_budget_s=time_budget, lr=lr, bf16=bf16, val_every=val_every,
        pool=PoolConfig(n_procedural=procedural, items_per_class=items_per_class, snrs=snr_list, seed=seed,
                        simulator=parse_key_values(simulator)),
        init_from=str(init_from) if init_from else None, seed=seed, device=device,
        supcon_weight=supcon_weight, supcon_temperature=supcon_temperature, stats_items_per_class=stats_items,
        batch_classes=batch_classes, batch_items=batch_items,
    )  # fmt: skip
    res = train(cfg, output, resume=resume, force=force)
    typer.echo(
        f"trained {method} for {res['episodes']} episodes in {res['seconds']:.0f} s; "
        f"best validation accuracy {res['best_val_accuracy']:.3f} -> {output}"
    )


def _json_safe(obj):
    """Plain JSON values: numpy scalars unwrapped, NaN/inf as null (strict JSON has no NaN)."""
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    return str(obj)


def parse_tilt_range(text: str) -> tuple[float, float] | None:
    """'-60,60' -> (-60.0, 60.0); 'none' -> None (no missing wedge)."""
    if text.strip().lower() == "none":
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise CryoshotError(f"--tilt-range must be MIN,MAX in degrees (e.g. -60,60) or none, got '{text}'") from None
    if not -90 <= lo < hi <= 90:
        raise CryoshotError(f"--tilt-range needs -90 <= MIN < MAX <= 90 degrees, got '{text}'")
    return (lo, hi)


TiltRange = Annotated[
    str, typer.Option("--tilt-range", help="Template only: tilt range MIN,MAX (degrees) of the missing wedge; 'none'.")
]


@app.command("evaluate")
def evaluate_cmd(
    ctx: typer.Context,
    data: Annotated[Path, typer.Argument(help="Labelled subtomogram set (STAR); every class is treated as novel.")],
    way: Annotated[int, typer.Option("--way", min=2, max=1000, help="Classes per episode (N).")] = 5,
    shot: Annotated[int, typer.Option("--shot", min=1, max=1000, help="Support examples per class (K).")] = 5,
    query: Annotated[int, typer.Option("--query", min=1, max=100_000, help="Queries per class.")] = 15,
    episodes: Annotated[int, typer.Option("--episodes", min=1, max=10**7, help="Number of seeded episodes.")] = 100,
    method: Annotated[str, typer.Option("--method", parser=_method_choice, help=METHODS_HELP)] = "protonet",
    model: Annotated[str, typer.Option("--model", help="'default' (shipped) or a checkpoint path.")] = "default",
    distance: Annotated[
        str | None,
        typer.Option(
            "--distance", parser=choice(("d", "d*", "d+d*")), help="Override the distance: d, d* or d+d* (ablation)."
        ),
    ] = None,
    label_column: Annotated[str, typer.Option("--label-column", help="Column with labels.")] = "rlnClassNumber",
    angpix: AngpixOverride = None,
    tilt_range: TiltRange = "-60,60",
    seed: Seed = 0,
    rotations: Rotations = None,
    as_json: Annotated[bool, typer.Option("--json", help="Also print one JSON object as the last line.")] = False,
) -> None:
    """N-way K-shot episodes on labelled data -> accuracy (mean ± 95% CI), macro precision, per class."""
    record_run(ctx)
    import json

    from cryoshot.evaluate.fewshot import evaluate_set

    res = evaluate_set(
        data, method=method, model=model, way=way, shot=shot, query=query, episodes=episodes, distance=distance,
        label_column=label_column, angpix=angpix, tilt_range=parse_tilt_range(tilt_range), seed=seed,
        rotations=rotations,
    )  # fmt: skip
    name = res["method"]
    typer.echo(f"{name}: {way}-way {shot}-shot, {query} queries, {episodes} episodes on {res['n_subtomograms']} "
               f"subtomograms ({res['box']}^3 at {res['voxel_size_A']:.3g} Å)")  # fmt: skip
    typer.echo(f"  accuracy         {res['accuracy_mean']:.4f} ± {res['accuracy_ci95']:.4f} (95% CI)")
    typer.echo(f"  macro precision  {res['macro_precision']:.4f}")
    typer.echo("  per class:")
    for c, a in res["per_class_accuracy"].items():
        typer.echo(f"    {c:<12} {'n/a' if a is None else f'{a:.3f}'}")
    if as_json:
        typer.echo(json.dumps(_json_safe(res), allow_nan=False))


@app.command("classify")
@distributed_options
def classify_cmd(
    ctx: typer.Context,
    support: Annotated[Path, typer.Option("--support", help="Labelled support set (STAR).")],
    query: Annotated[Path, typer.Option("--query", help="Query set to classify (STAR).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Predictions STAR file.")],
    model: Annotated[str, typer.Option("--model", help="'default' (shipped) or a checkpoint path.")] = "default",
    method: Annotated[str, typer.Option("--method", parser=_method_choice, help=METHODS_HELP)] = "protonet",
    shot: Annotated[
        int | None, typer.Option("--shot", min=1, max=100_000, help="Require at least K support examples per class.")
    ] = None,
    label_column: Annotated[str, typer.Option("--label-column", help="Support label column.")] = "rlnClassNumber",
    angpix: AngpixOverride = None,
    no_unknown: Annotated[bool, typer.Option("--no-unknown", help="Always assign a support class.")] = False,
    unknown_quantile: Annotated[
        float,
        typer.Option(
            "--unknown-quantile",
            parser=real(0, 1, lo_open=True),
            help="Quantile of the leave-one-out support distances.",
        ),
    ] = 0.95,
    unknown_margin: Annotated[
        float,
        typer.Option(
            "--unknown-margin",
            parser=real(0, 1e6, lo_open=True),
            help="Threshold = quantile x margin; larger rejects fewer.",
        ),
    ] = 1.5,
    tilt_range: TiltRange = "-60,60",
    unit_rows: Annotated[
        int,
        typer.Option("--unit-rows", min=1, max=10**7, help="Queries per work unit (--scheduler spreads the units)."),
    ] = 2048,
    rotations: Rotations = None,
    force: Force = False,
    dist: DistOptions = DistOptions(),
) -> None:
    """Few labelled examples + unlabelled subtomograms (or 2D particle images) -> predicted class, probability, or 'unknown'."""
    record_run(ctx)
    from cryoshot.fewshot.classify import ClassifyConfig, classify_sets
    from cryoshot.io.images2d import is_2d_particle_set
    from cryoshot.pretrained import resolve_model, resolve_siamese_model
    from cryoshot.utils.threads import configure_threads

    configure_threads()
    images2d = is_2d_particle_set(support)  # 2D particle stacks: the Siamese embedding
    with dist.runner() as runner:
        cfg = ClassifyConfig(method=method, shot=shot, label_column=label_column, angpix=angpix,
                             unknown=not no_unknown, unknown_quantile=unknown_quantile, unknown_margin=unknown_margin,
                             tilt_range_deg=parse_tilt_range(tilt_range), unit_rows=unit_rows,
                             rotations=rotations)  # fmt: skip
        out = classify_sets(support, query, output, cfg, force=force, runner=runner, continue_=dist.continue_,
                            model_path=resolve_siamese_model(model) if images2d else resolve_model(model, method))  # fmt: skip
    counts = out["cryoshotPredictedClass"].value_counts()
    thr = out.attrs.get("threshold")
    typer.echo(f"classified {len(out)} {'particle images with siamese' if images2d else f'subtomograms with {method}'}"
               f" -> {output}")  # fmt: skip
    typer.echo(f"  voxel sizes: support {out.attrs['voxel_size_support_A']:.3g} Å, "
               f"query {out.attrs['voxel_size_query_A']:.3g} Å")  # fmt: skip
    typer.echo("  " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    typer.echo(f"  unknown threshold: {'none' if thr is None else f'{thr:.3g}'}")


@app.command("average")
def average_cmd(
    ctx: typer.Context,
    data: Annotated[Path, typer.Argument(help="Subtomogram set (STAR), e.g. the predictions of classify.")],
    outdir: Annotated[Path, typer.Option("--outdir", "-o", help="Output folder (maps, FSC, aligned STAR).")],
    class_column: Annotated[
        str, typer.Option("--class-column", help="Column with classes ('none': one class of all particles).")
    ] = "rlnClassNumber",
    reference: Annotated[
        Path | None, typer.Option("--reference", help="Initial reference MRC (default: reference-free).")
    ] = None,
    angular_step: Annotated[
        float, typer.Option("--angular-step", parser=real(1, 180), help="Global search step (degrees).")
    ] = 30.0,
    refine_levels: Annotated[
        int, typer.Option("--refine-levels", min=0, max=10, help="Local searches, each halving it.")
    ] = 2,
    lowpass: Annotated[
        float,
        typer.Option("--lowpass", parser=real(0, 10_000, lo_open=True), help="Alignment low-pass resolution (Å)."),
    ] = 30.0,
    max_shift: Annotated[
        float, typer.Option("--max-shift", parser=real(0, 100_000), help="Largest shift searched (Å).")
    ] = 30.0,
    tilt_range: Annotated[
        str, typer.Option("--tilt-range", help="Tilt range MIN,MAX in degrees (missing wedge); 'none': no wedge.")
    ] = "-60,60",
    iterations: Annotated[
        int, typer.Option("--iterations", min=1, max=100, help="Align-average rounds per half set.")
    ] = 3,
    angpix: AngpixOverride = None,
    seed: Seed = 0,
    force: Force = False,
    force_size: ForceSize = False,
) -> None:
    """Gold-standard per-class subtomogram averages with missing-wedge compensation and FSC resolution."""
    record_run(ctx)
    from cryoshot.align.average import AverageConfig
    from cryoshot.align.search import AlignConfig
    from cryoshot.align.workflow import average_set
    from cryoshot.utils.threads import configure_threads

    configure_threads()
    tr = parse_tilt_range(tilt_range)
    cfg = AverageConfig(
        align=AlignConfig(angular_step_deg=angular_step, refine_levels=refine_levels, lowpass_A=lowpass,
                          max_shift_A=max_shift, tilt_range_deg=tr),
        iterations=iterations, seed=seed,
    )  # fmt: skip
    col = None if class_column.lower() == "none" else class_column
    summary = average_set(
        data, outdir, class_column=col, reference=reference, config=cfg, angpix=angpix, force=force,
        force_size=force_size,
    )  # fmt: skip
    typer.echo(f"averaged {sum(n for _, n, _ in summary.rows)} particles in {len(summary.rows)} classes -> {outdir}")
    typer.echo("  class         particles   resolution (FSC 0.143, half maps)")
    for c, n, res in summary.rows:
        typer.echo(f"  {c:<13} {n:>9}   {res:.1f} Å")


@app.command("pick")
@distributed_options
def pick_cmd(
    ctx: typer.Context,
    micrographs: Annotated[list[Path], typer.Argument(help="Micrographs (2D MRC), the reference(s) among them.")],
    outdir: Out,
    diameter: Annotated[
        float, typer.Option("--diameter", parser=real(0, 1e5, lo_open=True), help="Particle diameter (Å).")
    ],
    exemplars: Annotated[
        Path | None,
        typer.Option(
            "--exemplars",
            help="STAR of picked particles (rlnMicrographName, rlnCoordinateX/Y in pixels), or one micrograph's "
            "RELION coordinate file (<micrograph>_manualpick.star).",
        ),
    ] = None,
    model: Annotated[
        str, typer.Option("--model", help="'default' (shipped MAE), a pre-trained MAE, or an earlier picker.pt.")
    ] = "default",
    threshold: Annotated[
        str,
        typer.Option(
            "--threshold",
            help="auto (= gmm3-pooled: a mixture of background, other proteins and the exemplars' kind fitted once "
            "to the candidates of all micrographs, the top one kept), gmm3 (the same fitted to each micrograph "
            "alone), gmm (particles against background), density (the paper's rule), tail, or a score on "
            "the scale of rlnAutopickFigureOfMerit (with --template-weight 0 --view-weight 0: the cosine, -1..1). "
            "OUTDIR/candidates keeps every candidate, for another cut.",
        ),
    ] = "auto",
    max_picks: Annotated[
        int | None, typer.Option("--max-picks", min=1, max=10**7, help="At most this many picks per micrograph.")
    ] = None,
    angpix: AngpixOverride = None,
    stride: Annotated[
        int, typer.Option("--stride", min=1, max=12, help="Scan step in binned pixels (a particle spans 16).")
    ] = 4,
    matching: Annotated[
        str, typer.Option("--matching", parser=choice(("max", "mean")), help="max (paper) or mean similarity.")
    ] = "max",
    template_weight: Annotated[
        float,
        typer.Option(
            "--template-weight",
            parser=real(0, 1),
            help="Weight of the exemplars' template correlation in the figure of merit (each opinion standardised "
            "per micrograph; the encoder's cosine gets 1 - the two weights).",
        ),
    ] = 0.4,
    view_weight: Annotated[
        float,
        typer.Option(
            "--view-weight",
            parser=real(0, 1),
            help="Weight of the Siamese 2D network's similarity to the exemplar views in the figure of merit; "
            "--template-weight 0 --view-weight 0: the paper's cosine alone.",
        ),
    ] = 0.5,
    steps: Annotated[int, typer.Option("--steps", min=0, max=100_000, help="Stage-1 training steps.")] = 150,
    pi: Annotated[
        float | None,
        typer.Option("--pi", parser=real(0, 1, hi_open=True), help="Particle fraction of unlabelled windows (auto)."),
    ] = None,
    preview: Annotated[
        Path | None, typer.Option("--preview", help="Folder for PNGs of the first micrographs (picks, heat map).")
    ] = None,
    truth: Annotated[Path | None, typer.Option("--truth", help="Ground truth STAR to colour the previews.")] = None,
    seed: Seed = 0,
    force: Force = False,
    dist: DistOptions = DistOptions(),
) -> None:
    """Pick particles like a few exemplars in every micrograph (cryoMAE); RELION coordinate STAR files."""
    record_run(ctx)
    from cryoshot.picking.stage1 import LossConfig, Stage1Config
    from cryoshot.picking.workflow import PickConfig, pick

    cfg = PickConfig(diameter_A=diameter, angpix=angpix, threshold=threshold, max_picks=max_picks, stride_px=stride,
                     matching=matching, template_weight=template_weight, view_weight=view_weight, seed=seed, stage1=Stage1Config(steps=steps, loss=LossConfig(pi=pi)))  # fmt: skip
    with dist.runner() as runner:
        out = pick([str(m) for m in micrographs], exemplars, outdir, cfg, model=model, force=force,
                   continue_=dist.continue_, preview=preview, truth=truth, log=typer.echo, runner=runner)  # fmt: skip
    if out.stage1 is not None:
        typer.echo(f"stage 1: {out.stage1['steps']} steps in {out.stage1['seconds']:.1f} s (pi = {out.pi:.3f})")
    typer.echo(f"picked {out.n_picks} particles in {out.n_micrographs} micrographs -> {out.picks_star}"
               + (f" ({out.skipped} already done)" if out.skipped else ""))  # fmt: skip
    for p in out.previews:
        typer.echo(f"preview: {p}")


@app.command("evaluate-picks")
def evaluate_picks_cmd(
    ctx: typer.Context,
    truth: Annotated[Path, typer.Option("--truth", help="Ground-truth coordinates (STAR).")],
    picks: Annotated[Path, typer.Option("--picks", help="Picked coordinates (STAR), e.g. OUTDIR/picks.star.")],
    diameter: Annotated[
        float,
        typer.Option("--diameter", parser=real(0, 1e5, lo_open=True), help="Particle diameter (Å): the box side."),
    ],
    class_column: Annotated[
        str | None, typer.Option("--class-column", help="Truth column naming each particle's structure.")
    ] = None,
    target: Annotated[str | None, typer.Option("--target", help="Keep truth rows with this value only.")] = None,
    angpix: AngpixOverride = None,
    as_json: Annotated[bool, typer.Option("--json", help="Also print the result as one JSON line (last).")] = False,
) -> None:
    """Precision, recall and F1 of picks (IoU >= 0.5 of diameter-sized boxes, each particle once)."""
    record_run(ctx)
    import json

    from cryoshot.evaluate.picks import evaluate_picks

    res = evaluate_picks(truth, picks, diameter, angpix=angpix, class_column=class_column, target=target)
    for name, r in res["per_micrograph"].items():
        typer.echo(f"  {name}: precision {r['precision']:.3f}, recall {r['recall']:.3f}, F1 {r['f1']:.3f} "
                   f"({r['n_picks']} picks, {r['n_truth']} particles)")  # fmt: skip
    typer.echo(f"precision {res['precision']:.3f}, recall {res['recall']:.3f}, F1 {res['f1']:.3f} "
               f"({res['n_picks']} picks, {res['n_truth']} particles, {res['true_positives']} matched)")  # fmt: skip
    if as_json:
        typer.echo(json.dumps(_json_safe(res), allow_nan=False))


CtfMode = Annotated[
    str,
    typer.Option(
        "--ctf",
        parser=choice(("auto", "flip", "none")),
        help="auto: phase-flip with the STAR file's defocus columns when present; flip: require them; none.",
    ),
]
Siamese = Annotated[str, typer.Option("--model", help="'default' (shipped Siamese embedding) or a model file.")]


@app.command("cluster")
@distributed_options
def cluster_cmd(
    ctx: typer.Context,
    particles: Annotated[Path, typer.Argument(help="Particle STAR file (rlnImageName, e.g. 000001@particles.mrcs).")],
    outdir: Out,
    k: Annotated[
        str, typer.Option("--k", parser=k_choice, help="Clusters: auto (the elbow, kneedle rule) or N >= 2.")
    ] = "auto",
    method: Annotated[
        str,
        typer.Option(
            "--method",
            parser=choice(("siamese", "mra")),
            help="siamese (learned embedding + k-means) or mra (classical multi-reference alignment).",
        ),
    ] = "siamese",
    model: Siamese = "default",
    label_column: Annotated[
        str | None, typer.Option("--label-column", help="Known classes: colour the t-SNE, print ARI and NMI.")
    ] = None,
    ctf: CtfMode = "auto",
    angpix: AngpixOverride = None,
    k_max: Annotated[
        int | None, typer.Option("--k-max", min=2, max=1000, help="Largest k of the elbow (default 20).")
    ] = None,
    refine: Annotated[
        int,
        typer.Option(
            "--refine",
            min=0,
            max=50,
            help="siamese: iterations of multi-reference alignment started "
            "from the embedding's clusters (0: the embedding alone).",
        ),  # fmt: skip
    ] = 3,
    seed: Seed = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON line (last).")] = False,
    force: Force = False,
    dist: DistOptions = DistOptions(),
) -> None:
    """2D classification: cluster particle images (Siamese embedding or MRA), class averages, t-SNE, elbow."""
    record_run(ctx)
    import json

    from cryoshot.embedding.workflow import ClusterConfig, cluster_particles
    from cryoshot.utils.threads import configure_threads

    configure_threads()
    cfg = ClusterConfig(k=None if k == "auto" else int(k), method=method, ctf=ctf, angpix=angpix, k_max=k_max,
                        refine_iterations=refine, seed=seed)  # fmt: skip
    with dist.runner() as runner:
        res = cluster_particles(particles, outdir, cfg, model=model, label_column=label_column, force=force,
                                log=typer.echo, runner=runner, continue_=dist.continue_)  # fmt: skip
    sizes = np.bincount(res.labels, minlength=res.k)
    how = "automatic" if k == "auto" else "given"
    elbow = f"; elbow at {res.k_auto}" if res.k_auto is not None else ""
    if res.merge and res.merge["applied"]:
        elbow += f", {res.merge['k_over']} refined classes merged into {res.merge['k']}"
    typer.echo(f"clustered {len(res.labels)} particles into k = {res.k} classes with {method} ({how}{elbow}) "
               f"in {res.seconds:.1f} s -> {outdir}")  # fmt: skip
    typer.echo("  class sizes: " + ", ".join(f"{i + 1}: {n}" for i, n in enumerate(sizes)))
    if res.ari is not None:
        typer.echo(f"  against {label_column}: ARI {res.ari:.3f}, NMI {res.nmi:.3f}")
    if as_json:
        typer.echo(json.dumps(_json_safe(res.summary()), allow_nan=False))


@app.command("embed")
@distributed_options
def embed_cmd(
    ctx: typer.Context,
    particles: Annotated[Path, typer.Argument(help="Particle STAR file (rlnImageName, e.g. 000001@particles.mrcs).")],
    outdir: Out,
    model: Siamese = "default",
    ctf: CtfMode = "auto",
    angpix: AngpixOverride = None,
    force: Force = False,
    dist: DistOptions = DistOptions(),
) -> None:
    """Embed 2D particle images with the Siamese network: OUTDIR/embeddings.npy (row i = particle i) + the STAR."""
    record_run(ctx)
    from cryoshot.embedding.workflow import embed_particles
    from cryoshot.utils.threads import configure_threads

    configure_threads()
    with dist.runner() as runner:
        out, z = embed_particles(particles, outdir, model=model, ctf=ctf, angpix=angpix, force=force, runner=runner,
                                 continue_=dist.continue_)  # fmt: skip
    typer.echo(f"embedded {len(z)} particles ({z.shape[1]}-d, unit length) -> {out / 'embeddings.npy'}")


@app.command("models")
def models_cmd(
    name: Annotated[
        str | None,
        typer.Argument(help="A shipped model's name or a model file; none: every shipped model.", show_default=False),
    ] = None,  # fmt: skip
    as_json: Annotated[bool, typer.Option("--json", help="Print the provenance as JSON.")] = False,
) -> None:
    """The shipped models (or one model file): what uses each, and how it was made (every stage's command)."""
    import json

    from cryoshot.pretrained import describe_models

    models = describe_models(name)
    if as_json:
        typer.echo(json.dumps(models, indent=1))
        return
    for m in models:
        typer.echo(f"{m['name']}: {Path(m['file']).name} ({m['size_bytes'] / 1e6:.1f} MB, sha256 {m['sha256'][:12]})")
        if m["used_by"]:
            typer.echo(f"  used by: {m['used_by']}")
        enc = f", encoder {m['encoder']}" if m["encoder"] else ""
        typer.echo(f"  method {m['method']}{enc}; cryoshot {m['version']}, seed {m['seed']}")
        if not m["stages_recorded"]:
            typer.echo("  (written before every stage was recorded: only the last stage is known; see "
                       "src/cryoshot/pretrained/README.md)")  # fmt: skip
        for k, st in enumerate(m["stages"], 1):
            val = ", ".join(f"{key} {v:.3f}" for key, v in st["validation"].items()) or "none recorded"
            kept = f"kept step {st['best_episode']}" if st["best_episode"] else "kept its best step"
            typer.echo(f"  stage {k}: {st['method']}, {kept} (validation {val})")
            typer.echo(f"    command: {' '.join(st['argv'])}")
            if st["started_from"]:
                typer.echo(f"    started from: {st['started_from']}")


@app.command("demo")
def demo_cmd(
    ctx: typer.Context,
    outdir: Annotated[Path, typer.Option("--outdir", "-o", help="Output folder.")] = Path("demo_out"),
    force: Force = False,
) -> None:
    """Run the built-in demonstration on bundled data (nothing to download)."""
    record_run(ctx)
    from cryoshot.demo import run_demo

    run_demo(outdir, force=force)


def _safe_streams() -> None:
    """Never fail on a terminal that cannot show Å, µ or λ: unencodable characters become '?'."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="replace")
            except (ValueError, OSError):  # pragma: no cover - detached or closed stream
                pass


def _value_of(option: str, argv: list[str]) -> str | None:
    """The text the user gave for ``option`` (``--opt V`` or ``--opt=V``), for error messages."""
    for k, a in enumerate(argv):
        if a == option and k + 1 < len(argv):
            return argv[k + 1]
        if a.startswith(option + "="):
            return a.split("=", 1)[1]
    return None


def _usage_message(exc: Exception, argv: list[str]) -> str:
    msg = " ".join(exc.format_message().split()).rstrip(".")  # one line
    param = getattr(exc, "param", None)
    opts = [o for o in (getattr(param, "opts", None) or []) if o.startswith("-")]
    if opts and "got" not in msg:
        value = next((v for v in (_value_of(o, argv) for o in opts) if v is not None), None)
        if value is not None:
            msg = f"{msg.rstrip('.')} (got '{value}')"
    ctx = getattr(exc, "ctx", None)
    where = f"'{ctx.command_path} --help'" if ctx is not None else "'cryoshot --help'"
    return f"{msg}; see {where}"


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that temporary outputs are removed on the way out."""


def _on_sigterm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise _Terminated()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI; a user error is one line on stderr (``cryoshot: error: ...``, status 2).

    An internal error (a bug) is one line too (``cryoshot: internal error: ...``, status 1) that asks
    for a report; ``--debug`` (or ``CRYOSHOT_DEBUG=1``) shows its traceback.
    """
    import errno
    import os
    import signal
    import traceback

    from typer import Abort

    try:
        from typer._click.exceptions import ClickException
    except ImportError:  # typer releases that use the click package
        from click.exceptions import ClickException

    _safe_streams()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("CRYOSHOT_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]  # accepted anywhere on the line
    token = current_run.set(None)
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread
        pass
    try:
        argv = apply_config(typer.main.get_command(app), argv)
        code = app(args=argv, prog_name="cryoshot", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except ClickException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: its help was asked for
            typer.echo(exc.ctx.get_help() if exc.ctx is not None else "", err=False)
            return 0
        typer.echo(f"cryoshot: error: {_usage_message(exc, argv)}", err=True)
        return 2
    except CryoshotError as exc:
        typer.echo(f"cryoshot: error: {' '.join(str(exc).split())}", err=True)
        return 2
    except (KeyboardInterrupt, Abort) as exc:
        what = "terminated" if isinstance(exc, _Terminated) else "interrupted"
        typer.echo(f"cryoshot: {what}; no partial output was left behind", err=True)
        return 143 if isinstance(exc, _Terminated) else 130
    except MemoryError:
        typer.echo("cryoshot: error: out of memory; use fewer or smaller inputs (or a machine with more memory)",
                   err=True)  # fmt: skip
        return 2
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            typer.echo("cryoshot: error: the disk is full; free space or write elsewhere", err=True)
            return 2
        if exc.errno == errno.EPIPE:
            return 1
        if debug:
            traceback.print_exc()
        typer.echo(f"cryoshot: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), err=True)
        return 2
    except Exception as exc:  # a bug: say so in one line, traceback on request
        if debug:
            traceback.print_exc()
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        typer.echo(
            f"cryoshot: internal error: {type(exc).__name__}: {first} (a bug in cryoshot, not in your input; "
            "rerun with --debug for the traceback and report it)",
            err=True,
        )
        return 1
    finally:
        current_run.reset(token)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
