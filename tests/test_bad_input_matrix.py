"""The bad-input matrix: every verb against every kind of bad input.

Each case must end with a non-zero exit, exactly one ``cryoshot: error:`` line on stderr (progress
bars aside), no traceback, and nothing new left in the output location. A new verb joins by adding
one entry to ``VERBS`` (its arguments with a good set of inputs, and which inputs it reads).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cryoshot.cli import main
from cryoshot.io.mrc import write_mrc
from cryoshot.io.star import read_star_table, write_star
from tests.embedding.helpers import tiny_siamese, write_toy_particles
from tests.fewshot.helpers import tiny_checkpoint, write_toy_set


@dataclass
class Inputs:
    """Good inputs for every verb, made once per session in ``root``."""

    root: Path
    set_star: Path = field(init=False)  # labelled subtomogram set (16^3, 10 Å, 3 classes x 5)
    coords_star: Path = field(init=False)  # 3D coordinates in tomo.mrc
    tomo: Path = field(init=False)
    model: Path = field(init=False)
    micrograph: Path = field(init=False)  # 128^2 at 10 Å/px
    exemplars: Path = field(init=False)  # two exemplars on it
    mae: Path = field(init=False)  # a tiny picker MAE
    particles2d: Path = field(init=False)  # 2D particle stack + STAR (32^2 at 10 Å, two toy views)
    siamese: Path = field(init=False)  # a tiny Siamese 2D model

    def __post_init__(self):
        self.set_star = write_toy_set(self.root / "set", [0, 1, 2], per_class=5, seed=3)
        self.tomo = self.root / "tomo.mrc"
        write_mrc(self.tomo, np.random.default_rng(0).standard_normal((40, 40, 40)).astype(np.float32), 10.0)
        self.coords_star = self.root / "coords.star"
        write_star(self.coords_star, pd.DataFrame({"rlnCoordinateX": [20.0, 12.0], "rlnCoordinateY": [20.0, 15.0],
                                                   "rlnCoordinateZ": [20.0, 18.0], "rlnTomoName": ["tomo.mrc"] * 2}))  # fmt: skip
        self.model = tiny_checkpoint(self.root / "tiny.pt", method="protonet-ce")
        self.micrograph = self.root / "mic.mrc"
        write_mrc(self.micrograph, np.random.default_rng(1).standard_normal((128, 128)).astype(np.float32), 10.0)
        self.exemplars = self.root / "ex.star"
        write_star(self.exemplars, pd.DataFrame({"rlnMicrographName": ["mic.mrc"] * 2, "rlnCoordinateX": [64.0, 30.0],
                                                 "rlnCoordinateY": [64.0, 40.0]}))  # fmt: skip
        self.mae = tiny_mae(self.root / "mae.pt")
        self.particles2d = write_toy_particles(self.root / "p2d", per_view=4)
        self.siamese = tiny_siamese(self.root / "siamese.pt")


def tiny_mae(path: Path) -> Path:
    """A one-block picker MAE checkpoint (untrained) for fast CLI runs."""
    from cryoshot.models.checkpoint import save_checkpoint
    from cryoshot.models.mae2d import MAEConfig, PickerMAE

    cfg = MAEConfig(dim=16, depth=1, heads=2, decoder_dim=8, decoder_depth=1)
    torch.manual_seed(0)
    save_checkpoint(path, {"state_dict": PickerMAE(cfg).state_dict(), "config": {"model": cfg.to_dict()},
                           "method": "mae", "seed": 0})  # fmt: skip
    return path


# Each verb: a function (inputs, out) -> argv, the name of the option whose value is its main input
# STAR (None: positional first argument after the verb words; "" no STAR input), and whether it reads
# a model file. ``out`` is a path inside an empty folder; it must stay absent after every bad case.
@dataclass
class Verb:
    argv: Callable[[Inputs, Path], list[str]]
    star_option: str | None = ""  # "" no STAR input, None positional, else the option
    star_kind: str = "set"  # "set" (subtomogram set), "coords" or "images" (2D particle stack)
    model_option: str | None = None
    options: list[tuple[str, str]] = field(default_factory=list)  # bad option values
    output_is_folder: bool = True
    has_output: bool = True
    preview: bool = False


SIM = ["--seed", "-1"], ["--angpix", "0"], ["--angpix", "nan"], ["--snr", "-1"], ["--snr", "inf"]
VERBS: dict[str, Verb] = {
    "structures": Verb(lambda i, o: ["structures"], options=[("--nosuch", "1")], has_output=False),
    "models": Verb(lambda i, o: ["models"], options=[("--nosuch", "1")], has_output=False),
    "simulate subtomograms": Verb(
        lambda i, o: ["simulate", "subtomograms", "-s", "1bxn", "--box", "16", "--per-class", "1", "-o", str(o)],
        options=[
            ("--seed", "-1"),
            ("--angpix", "0"),
            ("--angpix", "nan"),
            ("--snr", "-1"),
            ("--box", "abc"),
            ("--dose", "-5"),
            ("--tilt-min", "-95"),
            ("--max-shift", "1000"),
            ("--per-class", "0"),
            ("--box", "100000"),
            ("-s", "procedural:-1"),
            ("-s", "nosuch"),
            ("--method", "x"),
        ],  # fmt: skip
        preview=True,
    ),
    "simulate micrographs": Verb(
        lambda i, o: [
            "simulate",
            "micrographs",
            "-s",
            "1bxn",
            "--size",
            "128",
            "--particle-box",
            "32",
            "--particles",
            "2",
            "-n",
            "1",
            "-o",
            str(o),
        ],  # fmt: skip
        options=[
            ("--seed", "-1"),
            ("--angpix", "-2"),
            ("--size", "1000000"),
            ("--particle-box", "4096"),
            ("--defocus-min", "nan"),
            ("--micrographs", "0"),
        ],  # fmt: skip
        preview=True,
    ),
    "simulate projections": Verb(
        lambda i, o: [
            "simulate",
            "projections",
            "-s",
            "1bxn",
            "--box",
            "32",
            "--per-class",
            "1",
            "--views",
            "2",
            "-o",
            str(o),
        ],  # fmt: skip
        options=[("--seed", "-1"), ("--views", "0"), ("--jitter", "-1"), ("--snr", "nan")],
        preview=True,
    ),
    "extract": Verb(
        lambda i, o: ["extract", str(i.coords_star), "--box", "8", "--tomogram", str(i.tomo), "-o", str(o)],
        star_option=None,
        star_kind="coords",
        options=[("--box", "0"), ("--box", "100000"), ("--angpix", "0"), ("--edge", "x")],
    ),
    "train": Verb(
        lambda i, o: [
            "train",
            "protonet-ce",
            "--encoder",
            "cryoshot-small",
            "--init-from",
            str(i.model),
            "--procedural",
            "4",
            "--episodes",
            "2",
            "-o",
            str(o),
        ],  # fmt: skip
        model_option="--init-from",
        options=[
            ("--seed", "-1"),
            ("--shot", "0"),
            ("--shot", "-2"),
            ("--way", "1"),
            ("--way", "0"),
            ("--query", "-1"),
            ("--episodes", "0"),
            ("--episodes", "99999999999999999999"),
            ("--lr", "-1"),
            ("--lr", "nan"),
            ("--procedural", "-5"),
            ("--val-every", "0"),
            ("--supcon-temperature", "0"),
            ("--stats-items", "0"),
            ("--batch-classes", "0"),
            ("--device", "tpu"),
            ("--device", "cuda:7"),
            ("--snrs", "0.1,x"),
            ("--simulator", "max_shift_px"),
            ("--simulator", "nosuch=1"),
            ("--simulator", "max_shift_px=abc"),
            ("--simulator", "max_shift_px=1000"),
        ],  # fmt: skip
        output_is_folder=False,
    ),
    "evaluate": Verb(
        lambda i, o: [
            "evaluate",
            str(i.set_star),
            "--model",
            str(i.model),
            "--way",
            "3",
            "--shot",
            "2",
            "--query",
            "2",
            "--episodes",
            "2",
        ],  # fmt: skip
        star_option=None,
        model_option="--model",
        options=[
            ("--seed", "-1"),
            ("--query", "0"),
            ("--way", "1"),
            ("--episodes", "0"),
            ("--method", "x"),
            ("--distance", "x"),
            ("--angpix", "0"),
            ("--tilt-range", "-100,60"),
        ],  # fmt: skip
        has_output=False,
    ),
    "classify": Verb(
        lambda i, o: [
            "classify",
            "--support",
            str(i.set_star),
            "--query",
            str(i.set_star),
            "--model",
            str(i.model),
            "-o",
            str(o),
        ],  # fmt: skip
        star_option="--query",
        model_option="--model",
        options=[
            ("--shot", "0"),
            ("--unknown-quantile", "0"),
            ("--unknown-margin", "nan"),
            ("--unit-rows", "0"),
            ("--method", "x"),
            ("--angpix", "-1"),
            ("--tilt-range", "a,b"),
        ],  # fmt: skip
        output_is_folder=False,
    ),
    "average": Verb(
        lambda i, o: ["average", str(i.set_star), "-o", str(o), "--angular-step", "90", "--iterations", "1"],
        star_option=None,
        options=[
            ("--seed", "-1"),
            ("--angular-step", "0"),
            ("--iterations", "0"),
            ("--lowpass", "nan"),
            ("--tilt-range", "-60,100"),
            ("--class-column", "nosuch"),
        ],  # fmt: skip
    ),
    "demo": Verb(lambda i, o: ["demo", "-o", str(o)], options=[("--outdir", "")]),
    "pick": Verb(
        lambda i, o: [
            "pick",
            str(i.micrograph),
            "--exemplars",
            str(i.exemplars),
            "--diameter",
            "160",
            "-o",
            str(o),
            "--model",
            str(i.mae),
            "--steps",
            "1",
        ],  # fmt: skip
        star_option="--exemplars",
        star_kind="coords",
        model_option="--model",
        options=[
            ("--diameter", "0"),
            ("--diameter", "nan"),
            ("--diameter", "100000"),
            ("--diameter", "20"),
            ("--threshold", "high"),
            ("--threshold", "inf"),
            ("--template-weight", "1.5"),
            ("--max-picks", "0"),
            ("--stride", "0"),
            ("--angpix", "-1"),
            ("--seed", "-1"),
            ("--pi", "1"),
            ("--matching", "median"),
        ],  # fmt: skip
    ),
    "cluster": Verb(
        lambda i, o: ["cluster", str(i.particles2d), "-o", str(o), "--model", str(i.siamese), "--k", "2"],
        star_option=None,
        star_kind="images",
        model_option="--model",
        options=[
            ("--k", "0"),
            ("--k", "1"),
            ("--k", "abc"),
            ("--k", "500"),
            ("--method", "kmeans"),
            ("--ctf", "x"),
            ("--angpix", "0"),
            ("--label-column", "nosuch"),
            ("--seed", "-1"),
            ("--k-max", "1"),
            ("--refine", "-1"),
            ("--refine", "abc"),
        ],  # fmt: skip
    ),
    "embed": Verb(
        lambda i, o: ["embed", str(i.particles2d), "-o", str(o), "--model", str(i.siamese)],
        star_option=None,
        star_kind="images",
        model_option="--model",
        options=[("--ctf", "x"), ("--angpix", "-1")],
    ),
    "evaluate-picks": Verb(
        lambda i, o: ["evaluate-picks", "--truth", str(i.exemplars), "--picks", str(i.exemplars), "--diameter", "160"],
        star_option="--picks",
        star_kind="coords",
        has_output=False,
        options=[("--diameter", "-1"), ("--class-column", "nosuch"), ("--angpix", "0"), ("--target", "x")],
    ),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    return Inputs(tmp_path_factory.mktemp("inputs"))


def _set_variant(inputs: Inputs, folder: Path, kind: str) -> Path:
    """A copy of the good subtomogram set with one kind of defect; returns its STAR path."""
    shutil.copytree(inputs.set_star.parent, folder)
    star = folder / "particles.star"
    table = read_star_table(star)
    first = folder / table["rlnImageName"].iloc[0]
    if kind == "missing-mrc":
        first.unlink()
    elif kind == "not-mrc":
        first.write_text("this is not an MRC file\n" * 50)
    elif kind == "truncated-mrc":
        first.write_bytes(first.read_bytes()[:1500])
    elif kind == "nan-mrc":
        data = np.zeros((16, 16, 16), np.float32)
        data[3, 3, 3] = np.nan
        first.unlink()
        _write_raw_mrc(first, data)
    elif kind == "2d-mrc":
        first.unlink()
        write_mrc(first, np.zeros((16, 16), np.float32), 10.0)
    elif kind == "wrong-box":
        first.unlink()
        write_mrc(first, np.zeros((20, 20, 20), np.float32), 10.0)
    elif kind == "truncated-star":
        text = star.read_text()
        star.write_text(text[: len(text) - 12])
    elif kind == "bad-image-index":
        table["rlnImageName"] = [f"99@{n}" for n in table["rlnImageName"]]
        star.unlink()
        write_star(star, table)
    elif kind == "huge-label":
        table["rlnClassNumber"] = table["rlnClassNumber"].astype(float) * 1e300
        star.unlink()
        write_star(star, table)
    elif kind == "no-image-column":
        star.unlink()
        write_star(star, table.drop(columns=["rlnImageName"]))
    return star


def _images_variant(inputs: Inputs, folder: Path, kind: str) -> Path:
    """A copy of the good 2D particle set with one kind of defect; returns its STAR path."""
    from cryoshot.io.star import read_star_blocks

    shutil.copytree(inputs.particles2d.parent, folder)
    star = folder / "particles.star"
    blocks = read_star_blocks(star)
    t = blocks["particles"]
    if kind == "beyond":
        t.loc[0, "rlnImageName"] = "000099@particles.mrcs"
    elif kind == "mixed-sizes":
        write_mrc(folder / "big.mrcs", np.zeros((2, 40, 40), np.float32), 10.0, stack=True)
        t.loc[0, "rlnImageName"] = "000001@big.mrcs"
    elif kind == "volume":
        write_mrc(folder / "vol.mrc", np.zeros((32, 32, 32), np.float32), 10.0)
        t.loc[0, "rlnImageName"] = "vol.mrc"
    elif kind == "nan-image":
        data = np.zeros((2, 32, 32), np.float32)
        data[1, 5, 5] = np.nan
        _write_raw_mrc(folder / "nan.mrcs", data)
        t.loc[0, "rlnImageName"] = "000002@nan.mrcs"
    elif kind == "missing-stack":
        (folder / "particles.mrcs").unlink()
    elif kind == "no-image-column":
        t = t.drop(columns=["rlnImageName"])
    elif kind == "too-few":
        t = t.iloc[:1]
    star.unlink()
    write_star(star, {"optics": blocks["optics"], "particles": t})
    return star


def _write_raw_mrc(path: Path, data: np.ndarray) -> None:
    """An MRC file holding ``data`` as given (NaN included), written without cryoshot's checks."""
    import warnings

    import mrcfile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mrcfile.new(path) as m:
            m.set_data(data)
            m.voxel_size = 10.0


def _micrograph_variant(folder: Path, kind: str) -> Path:
    """A bad query micrograph."""
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / ("query.mrcs" if kind == "stack" else "query.mrc")
    if kind == "missing":
        return p
    if kind == "garbage":
        p.write_bytes(bytes(range(256)) * 64)
    elif kind == "3d":
        write_mrc(p, np.zeros((8, 128, 128), np.float32), 10.0)
    elif kind == "stack":
        write_mrc(p, np.zeros((3, 128, 128), np.float32), 10.0, stack=True)
    elif kind == "nan":
        data = np.zeros((128, 128), np.float32)
        data[5, 5] = np.nan
        _write_raw_mrc(p, data)
    elif kind == "no-pixel-size":
        import mrcfile

        with mrcfile.new(p) as m:
            m.set_data(np.zeros((128, 128), np.float32))
    return p


def _file_variant(folder: Path, kind: str) -> Path:
    """A bad file of one kind (for any file input: STAR, model, tomogram)."""
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "input.bin"
    if kind == "missing":
        return folder / "nosuch.star"
    if kind == "folder":
        (folder / "adir").mkdir()
        return folder / "adir"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "garbage":
        p.write_bytes(bytes(range(256)) * 8)
    elif kind == "text":
        p.write_text("hello\nworld\n")
    return p


STAR_FILE_KINDS = ["missing", "folder", "empty", "garbage", "text"]
SET_KINDS = ["missing-mrc", "not-mrc", "truncated-mrc", "nan-mrc", "2d-mrc", "wrong-box", "truncated-star",
             "bad-image-index", "no-image-column"]  # fmt: skip
IMAGE_KINDS = ["beyond", "mixed-sizes", "volume", "nan-image", "missing-stack", "no-image-column", "too-few"]
MODEL_KINDS = ["missing", "folder", "empty", "garbage", "truncated-model", "pickle"]


def _cases() -> list[tuple[str, str, str]]:
    """(verb, case kind, detail) for every applicable combination."""
    out = []
    for name, v in VERBS.items():
        for opt, val in v.options:
            out.append((name, "option", f"{opt}={val}"))
        if v.star_option != "":
            out += [(name, "star-file", k) for k in STAR_FILE_KINDS]
            if v.star_kind == "set":
                out += [(name, "set", k) for k in SET_KINDS]
            if v.star_kind == "images":
                out += [(name, "images", k) for k in IMAGE_KINDS if k != "too-few" or name == "cluster"]
        if v.model_option:
            out += [(name, "model", k) for k in MODEL_KINDS]
        if v.has_output:
            out += [(name, "output", k) for k in ("exists", "missing-parent")]
            out.append((name, "output", "user-folder-force" if v.output_is_folder else "folder-as-file-force"))
        if v.preview:
            out.append((name, "preview", "missing-folder"))
    out += [(name, "config", k) for name in VERBS if name not in ("structures", "models")
            for k in ("unknown-key", "not-yaml")]  # fmt: skip
    out += [("extract", "tomogram", k) for k in ("missing", "garbage", "2d")]
    out += [("extract", "coords", k) for k in ("abc-coordinate", "micrographs-without-2d")]
    out += [("pick", "micrograph", k) for k in ("missing", "garbage", "3d", "stack", "nan", "no-pixel-size")]
    out += [("pick", "exemplars", k) for k in ("outside", "other-micrograph", "none", "no-coordinates")]
    return out


CASES = _cases()


def _replace_arg(argv: list[str], option: str | None, value: str, verb_words: int) -> list[str]:
    argv = list(argv)
    if option is None:  # positional: the first argument after the verb words
        argv[verb_words] = value
    else:
        argv[argv.index(option) + 1] = value
    return argv


@pytest.mark.parametrize("verb,kind,detail", CASES, ids=[f"{v}|{k}|{d}" for v, k, d in CASES])
def test_bad_input_gives_one_clear_line_and_leaves_nothing(inputs, tmp_path, capsys, verb, kind, detail):
    v = VERBS[verb]
    outdir = tmp_path / "outloc"
    outdir.mkdir()
    out = outdir / ("result" if v.output_is_folder else "result.out")
    argv = v.argv(inputs, out)
    words = len(verb.split())
    before: set[str] = set()
    if kind == "option":
        opt, val = detail.split("=", 1)
        argv = argv + [opt, val] if opt not in argv else _replace_arg(argv, opt, val, words)
    elif kind == "star-file":
        argv = _replace_arg(argv, v.star_option, str(_file_variant(tmp_path / "bad", detail)), words)
    elif kind == "set":
        argv = _replace_arg(argv, v.star_option, str(_set_variant(inputs, tmp_path / "badset", detail)), words)
    elif kind == "images":
        argv = _replace_arg(argv, v.star_option, str(_images_variant(inputs, tmp_path / "badimg", detail)), words)
    elif kind == "model":
        bad = tmp_path / "bad" / "model.pt"
        if detail == "truncated-model":
            bad.parent.mkdir(parents=True)
            bad.write_bytes(inputs.model.read_bytes()[:3000])
        elif detail == "pickle":
            bad.parent.mkdir(parents=True)
            torch.save({"format": "cryoshot-checkpoint-1", "x": _Evil()}, bad)
        else:
            bad = _file_variant(tmp_path / "bad", detail)
        argv = _replace_arg(argv, v.model_option, str(bad), words)
    elif kind == "output":
        if detail == "exists":
            if v.output_is_folder:
                out.mkdir()
                (out / "mine.txt").write_text("x")
            else:
                out.write_text("x")
        elif detail == "missing-parent":
            missing = outdir / "nosuch" / out.name
            argv = [str(missing) if a == str(out) else a for a in argv]
        elif detail == "folder-as-file-force":  # a folder where the output is a file (e.g. classify -o DIR)
            out.mkdir()
            (out / "important.txt").write_text("precious")
            argv = argv + ["--force"]
        else:  # a folder with a user's files, with --force
            out.mkdir()
            (out / "important.txt").write_text("precious")
            argv = argv + ["--force"]
    elif kind == "preview":
        argv = argv + ["--preview", str(outdir / "nosuch" / "p.png")]
    elif kind == "tomogram":
        tomo = tmp_path / "bad" / "t.mrc"
        tomo.parent.mkdir()
        if detail == "garbage":
            tomo.write_bytes(bytes(range(256)) * 8)
        elif detail == "2d":
            write_mrc(tomo, np.zeros((40, 40), np.float32), 10.0)
        argv = _replace_arg(argv, "--tomogram", str(tomo), words)
    elif kind == "config":
        cfg = tmp_path / "bad" / "run.yaml"
        cfg.parent.mkdir()
        cfg.write_text("no_such_option: 1\n" if detail == "unknown-key" else "a: [unclosed\n")
        argv = argv + ["--config", str(cfg)]
    elif kind == "coords":
        table = read_star_table(inputs.coords_star)
        if detail == "abc-coordinate":
            table["rlnCoordinateX"] = table["rlnCoordinateX"].astype(object)
            table.loc[1, "rlnCoordinateX"] = "abc"
        else:
            table = table.drop(columns=["rlnTomoName"]).assign(rlnMicrographName="tomo.mrc")
        bad = tmp_path / "bad" / "coords.star"
        bad.parent.mkdir()
        shutil.copy(inputs.tomo, bad.parent / "tomo.mrc")
        write_star(bad, table)
        argv = _replace_arg(argv, None, str(bad), words)
        if detail != "abc-coordinate":
            argv = argv[: argv.index("--tomogram")] + argv[argv.index("--tomogram") + 2 :]
    elif kind == "micrograph":  # a bad query micrograph beside the good reference
        argv = argv[: words + 1] + [str(_micrograph_variant(tmp_path / "bad", detail))] + argv[words + 1 :]
    elif kind == "exemplars":
        table = read_star_table(inputs.exemplars).assign(rlnMicrographName=str(inputs.micrograph))
        bad = tmp_path / "bad" / "ex.star"
        bad.parent.mkdir()
        if detail == "outside":
            table.loc[1, "rlnCoordinateX"] = 500.0
        elif detail == "other-micrograph":
            table["rlnMicrographName"] = "other.mrc"
            shutil.copy(inputs.micrograph, bad.parent / "other.mrc")
        elif detail == "none":
            table = table.iloc[:0]
        else:
            table = table.drop(columns=["rlnCoordinateY"])
        write_star(bad, table)
        argv = _replace_arg(argv, "--exemplars", str(bad), words)
    before = {p.relative_to(outdir).as_posix() for p in outdir.rglob("*")}
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("cryoshot:") and not ln.startswith("cryoshot: warning:")]
    assert rc != 0, f"accepted: {argv}"
    assert "Traceback" not in err, err
    assert len(errors) == 1 and errors[0].startswith("cryoshot: error:"), err
    after = {p.relative_to(outdir).as_posix() for p in outdir.rglob("*")}
    if "--continue" in errors[0]:  # a work unit failed mid-run: the others' results are kept for --continue
        after = {p for p in after if not p.startswith(f".{out.name}.cryoshot-partial")}
    assert after == before, f"left behind: {sorted(after - before)}"
    if kind == "coords" and detail == "micrographs-without-2d":
        assert "--2d" in errors[0]
    if kind in ("micrograph", "exemplars"):
        expect = {"3d": "3D volume", "stack": "stack", "nan": "NaN", "no-pixel-size": "--angpix",
                  "outside": "outside", "other-micrograph": "not among", "none": "no exemplars",
                  "no-coordinates": "rlnCoordinateY"}.get(detail, "")  # fmt: skip
        assert expect in errors[0], errors[0]
    if kind == "images":
        expect = {"beyond": "beyond the end", "mixed-sizes": "mixed image sizes", "volume": "3D volume",
                  "nan-image": "NaN", "missing-stack": "does not exist", "no-image-column": "rlnImageName",
                  "too-few": "at least 3"}[detail]  # fmt: skip
        assert expect in errors[0], errors[0]
    if kind == "output" and detail.endswith("-force"):
        assert (out / "important.txt").read_text() == "precious"


class _Evil:
    def __reduce__(self):
        return (print, ("a crafted model ran code",))


def test_matrix_covers_every_verb():
    """New verbs must join the matrix: every CLI command appears in VERBS."""
    from cryoshot.cli import app, simulate_app

    names = {c.name for c in app.registered_commands} | {f"simulate {c.name}" for c in simulate_app.registered_commands}
    assert names <= set(VERBS), f"add {sorted(names - set(VERBS))} to VERBS"
