"""Alignment, averaging, FSC and the template-matching baseline (tiny seeded data, seconds)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cryoshot.align.average import AverageConfig, refine_class, superpose, wedge_average
from cryoshot.align.fourier import wedge_mask
from cryoshot.align.resolution import fsc_curve, resolution_at
from cryoshot.align.search import AlignConfig, Aligner
from cryoshot.align.so3 import angular_distance_deg, so3_grid
from cryoshot.cli import main
from cryoshot.errors import CryoshotError
from cryoshot.io.star import read_star_table
from cryoshot.simulate.optics import transfer_function_3d
from cryoshot.simulate.rotation import random_rotations, rotate_volumes
from cryoshot.simulate.structures import Structure
from cryoshot.simulate.subtomograms import SubtomogramConfig, SubtomogramSimulator
from tests.fewshot.helpers import write_toy_set

BOX = 32


@pytest.fixture(scope="module")
def blobs() -> np.ndarray:
    """An asymmetric structure: seven Gaussian blobs of different sizes (32^3)."""
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:BOX, :BOX, :BOX] - BOX // 2
    vol = np.zeros((BOX,) * 3, np.float32)
    for c in rng.uniform(-7, 7, (7, 3)):
        r = rng.uniform(2.0, 3.5)
        vol += np.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) / (2 * r * r))
    return vol


def _simulate(vol, n, snr=1.0, seed=3, **kw):
    cfg = SubtomogramConfig(box_px=BOX, snr=snr, seed=seed, max_shift_px=2.0, **kw)
    return SubtomogramSimulator([Structure("blobs", vol, 10.0)], cfg).simulate(range(n))


def test_so3_grid_covers_rotations_within_the_step():
    grid = so3_grid(30.0)
    rng = np.random.default_rng(1)
    r = np.stack([random_rotations(rng) for _ in range(300)])
    nearest = angular_distance_deg(r[:, None], grid[None]).min(1)
    assert nearest.max() < 30.0 and 500 < len(grid) < 600


def test_wedge_mask_matches_the_simulator():
    assert np.array_equal(wedge_mask(BOX).astype(bool), transfer_function_3d(BOX, 10.0, 3.0).measured)


def test_fourier_rotation_matches_real_space_rotation(blobs):
    al = Aligner(BOX, 10.0, AlignConfig(lowpass_A=30.0, tilt_range_deg=None))
    work = al.to_work(blobs[None])
    mats = torch.from_numpy(np.stack([random_rotations(np.random.default_rng(i)) for i in range(4)])).float()
    g, _ = al.reference(work[0]).rotated(mats)
    direct = al.spectra(rotate_volumes(work.expand(4, -1, -1, -1).contiguous(), mats))
    for a, b in zip(g, direct, strict=True):
        c = (a * b.conj()).sum().real / (a.abs().square().sum() * b.abs().square().sum()).sqrt()
        assert c > 0.98


def test_alignment_recovers_known_rotation_and_shift(blobs):
    b = _simulate(blobs, 6, snr=2.0)
    step = 30.0
    al = Aligner(BOX, 10.0, AlignConfig(angular_step_deg=step, refine_levels=1, lowpass_A=30.0))
    r = al.align(al.to_work(b.volumes), al.reference(al.to_work(blobs[None])[0]))
    assert angular_distance_deg(r.matrices, b.matrices).max() < step / 2
    assert np.abs(r.shifts_A / 10.0 - b.shifts_px).max() < 1.0
    assert (r.scores > 0.5).all()


def test_average_of_noiseless_rotated_copies_is_the_structure(blobs):
    b = _simulate(blobs, 24, use_ctf=False, use_dose=False)
    avg, weight = wedge_average(
        torch.from_numpy(b.clean), torch.from_numpy(b.matrices), torch.from_numpy(b.shifts_px),
        torch.from_numpy(wedge_mask(BOX)), wiener=0.01,
    )  # fmt: skip
    assert np.corrcoef(avg.numpy().ravel(), blobs.ravel())[0, 1] > 0.99
    assert 0.0 <= weight.min() and weight.max() <= 1.0 + 1e-6


def test_reference_free_refinement_recovers_the_structure(blobs):
    b = _simulate(blobs, 12, use_ctf=False, use_dose=False)
    cfg = AverageConfig(align=AlignConfig(angular_step_deg=30.0, refine_levels=1, lowpass_A=30.0), iterations=2)
    res = refine_class(b.clean, 10.0, cfg, progress=False)
    moved = superpose(res.average, blobs, 10.0)
    assert np.corrcoef(moved.ravel(), blobs.ravel())[0, 1] > 0.9
    assert set(res.subset) == {1, 2} and res.resolution_A < 40.0


def test_fsc_of_identical_maps_is_one_and_of_noise_about_zero():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((BOX,) * 3).astype(np.float32)
    _, same = fsc_curve(a, a, 10.0)
    assert np.allclose(same, 1.0, atol=1e-5)
    freq, indep = fsc_curve(a, rng.standard_normal((BOX,) * 3).astype(np.float32), 10.0)
    assert np.abs(indep[3:]).mean() < 0.05 and np.abs(indep[3:]).max() < 0.25
    assert resolution_at(freq, indep) > 100.0  # noise resolves nothing
    assert resolution_at(freq, same) == pytest.approx(20.0)  # never below: Nyquist


def test_bad_inputs_raise_clear_errors(blobs):
    with pytest.raises(CryoshotError, match="angular step must be positive"):
        Aligner(BOX, 10.0, AlignConfig(angular_step_deg=0.0))
    with pytest.raises(CryoshotError, match="angular step must be positive"):
        Aligner(BOX, 10.0, AlignConfig(angular_step_deg=-5.0))
    with pytest.raises(CryoshotError, match="at least 4"):
        refine_class(np.stack([blobs] * 3), 10.0, progress=False)
    with pytest.raises(CryoshotError, match="box"):
        Aligner(BOX, 10.0).to_work(np.zeros((2, 24, 24, 24), np.float32))
    with pytest.raises(CryoshotError, match="reference box"):
        al = Aligner(BOX, 10.0)
        al.reference(torch.zeros(al.work_box + 2, al.work_box + 2, al.work_box + 2))


def test_average_cli_outputs_and_errors(tmp_path, capsys):
    star = write_toy_set(tmp_path / "data", [1, 4], per_class=6)
    out = tmp_path / "avg"
    args = ["average", str(star), "-o", str(out), "--angular-step", "45", "--refine-levels", "1",
            "--iterations", "1", "--lowpass", "40"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    names = {p.name for p in out.iterdir()}
    assert {"class_2.mrc", "class_2_half1.mrc", "fsc_5.csv", "fsc.png", "averages.png"} <= names
    table = read_star_table(out / "particles_aligned.star")
    assert {"rlnAngleRot", "rlnOriginZAngst", "rlnRandomSubset", "rlnClassNumber"} <= set(table.columns)
    assert main(args) == 2 and "--force" in capsys.readouterr().err  # never overwrite silently
    for bad, msg in ((["--angular-step", "0"], "--angular-step"), (["--tilt-range", "x"], "tilt-range")):
        assert main(args[:3] + [str(tmp_path / "bad")] + bad) == 2
        assert msg in capsys.readouterr().err and not (tmp_path / "bad").exists()
    few = write_toy_set(tmp_path / "few", [1, 4], per_class=3)
    assert main(["average", str(few), "-o", str(tmp_path / "few_out")]) == 2
    assert "needs at least 4" in capsys.readouterr().err and not (tmp_path / "few_out").exists()
    from cryoshot.io.mrc import write_mrc

    write_mrc(tmp_path / "ref24.mrc", np.zeros((24, 24, 24), np.float32), 10.0)
    assert main(args[:3] + [str(tmp_path / "r"), "--reference", str(tmp_path / "ref24.mrc")]) == 2
    assert "box" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_template_method_through_evaluate_json_and_classify(tmp_path, capsys):
    star = write_toy_set(tmp_path / "data", [0, 1, 2, 3], per_class=6)
    rc = main(["evaluate", str(star), "--method", "template", "--way", "3", "--shot", "2", "--query", "3",
               "--episodes", "3", "--json"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["method"] == "template" and res["accuracy_mean"] > 0.8 and res["model"] is None
    sup = write_toy_set(tmp_path / "sup", [0, 1], per_class=3, seed=1)
    qry = write_toy_set(tmp_path / "qry", [0, 1], per_class=4, seed=2)
    out = tmp_path / "pred.star"
    assert main(["classify", "--support", str(sup), "--query", str(qry), "--method", "template", "-o", str(out)]) == 0
    pred = read_star_table(out)
    assert (pred["cryoshotPredictedClass"].astype(str) == pred["rlnClassNumber"].astype(str)).mean() >= 0.75
    # probabilities come from NCC / temperature (not a softmax over 1 - NCC, which is near uniform)
    probs = pred[[c for c in pred.columns if c.startswith("cryoshotProb_")]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    known = pred["cryoshotPredictedClass"].astype(str) != "unknown"
    assert np.median(pred["cryoshotProbability"][known]) > 0.9
    # the wedge model is an option of evaluate/classify too; bad ranges are named
    from cryoshot.fewshot.methods import make_method

    assert make_method("template", None, tilt_range=None).config.tilt_range_deg is None
    assert make_method("template", None, tilt_range=(-45.0, 50.0)).config.tilt_range_deg == (-45.0, 50.0)
    rc = main(["evaluate", str(star), "--method", "template", "--way", "3", "--shot", "2", "--query", "3",
               "--episodes", "2", "--tilt-range", "none", "--json"])  # fmt: skip
    assert rc == 0 and json.loads(capsys.readouterr().out.strip().splitlines()[-1])["accuracy_mean"] > 0.8
    rc = main(["classify", "--support", str(sup), "--query", str(qry), "--method", "template", "-o",
               str(tmp_path / "p3.star"), "--tilt-range", "60,-60"])  # fmt: skip
    assert rc == 2 and "MIN < MAX" in capsys.readouterr().err and not (tmp_path / "p3.star").exists()
