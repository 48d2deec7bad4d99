"""``cryoshot cluster``, ``embed`` and ``train siamese`` in-process on tiny data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cryoshot.cli import main
from cryoshot.io.mrc import read_mrc
from cryoshot.io.star import read_star_blocks
from tests.embedding.helpers import tiny_siamese, write_toy_particles


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy2d")
    return write_toy_particles(root / "set", per_view=12, box=32, angpix=10.0, noise=0.3), tiny_siamese(root / "s.pt")


def test_cluster_siamese_writes_relion_outputs(toy, tmp_path, capsys):
    star, model = toy
    out = tmp_path / "c"
    rc = main(["cluster", str(star), "-o", str(out), "--model", str(model), "--k", "2", "--label-column",
               "rlnClassNumber", "--json"])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    res = json.loads(captured.out.strip().splitlines()[-1])
    assert res["k"] == 2 and res["method"] == "siamese" and res["seconds"] > 0
    assert res["ari"] > 0.9 and res["alignment_iterations"] >= 1  # the refinement separates the toy views
    blocks = read_star_blocks(out / "particles.star")
    inp = read_star_blocks(star)
    t, t_in = blocks["particles"], inp["particles"]
    assert list(t["rlnImageName"]) == list(t_in["rlnImageName"])  # unchanged
    assert set(t_in.columns) <= set(t.columns) and "optics" in blocks
    assert list(t["cryoshotInputClassNumber"]) == list(t_in["rlnClassNumber"])
    assert set(t["rlnClassNumber"]) <= {1, 2}
    avg = read_mrc(out / "class_averages.mrcs")
    assert avg.data.shape == (2, 32, 32) and avg.voxel_size_A == pytest.approx(10.0)
    for png in ("tsne_clusters.png", "tsne_labels.png", "elbow.png", "similarity.png", "class_averages.png"):
        assert (out / png).stat().st_size > 1000, png
    assert np.load(out / "embeddings.npy").shape[0] == len(t)
    assert (out / "run.yaml").exists()


def test_cluster_refine_zero_is_the_embedding_alone(toy, tmp_path, capsys):
    star, model = toy
    rc = main(["cluster", str(star), "-o", str(tmp_path / "e"), "--model", str(model), "--k", "2", "--refine", "0",
               "--json"])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert json.loads(captured.out.strip().splitlines()[-1])["alignment_iterations"] == 0


def test_cluster_mra_separates_the_toy_views_with_automatic_k(toy, tmp_path, capsys):
    star, _ = toy
    out = tmp_path / "m"
    rc = main(["cluster", str(star), "-o", str(out), "--method", "mra", "--label-column", "rlnClassNumber", "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    res = json.loads(captured.out.strip().splitlines()[-1])
    assert res["method"] == "mra" and res["k"] == 2 and res["ari"] > 0.9


def test_cluster_refuses_k_one_and_too_many_clusters(toy, tmp_path, capsys):
    star, model = toy
    for k in ("1", "0", "500"):
        assert main(["cluster", str(star), "-o", str(tmp_path / k), "--model", str(model), "--k", k]) != 0
        assert not (tmp_path / k).exists()
    assert "cluster" in capsys.readouterr().err


def test_embed_writes_one_row_per_particle(toy, tmp_path, capsys):
    star, model = toy
    out = tmp_path / "e"
    assert main(["embed", str(star), "-o", str(out), "--model", str(model)]) == 0, capsys.readouterr().err
    z = np.load(out / "embeddings.npy")
    assert z.shape == (24, 8) and np.allclose(np.linalg.norm(z, axis=1), 1, atol=1e-5)
    assert (out / "particles.star").exists()
    assert main(["embed", str(star), "-o", str(out), "--model", str(model)]) != 0  # exists, no --force


def test_train_siamese_runs_resumes_and_records_provenance(tmp_path, capsys):
    import torch

    out = tmp_path / "s.pt"
    args = ["train", "siamese", "-o", str(out), "-s", "procedural:0-3", "--episodes", "2", "--val-every", "2",
            "--seed", "1"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    ck = torch.load(out, weights_only=True)
    assert ck["method"] == "siamese" and ck["seed"] == 1 and ck["stages"][0]["method"] == "siamese"
    assert ck["config"]["structures"] == ["procedural:0-3"] and len(ck["history"]) >= 1
    assert main(args) != 0  # exists: needs --resume or --force
    assert main([*args[:7], "4", *args[8:], "--resume"]) == 0, capsys.readouterr().err
    last = torch.load(tmp_path / "s.pt.last", weights_only=True)
    assert last["episode"] == 4
    # a second stage from this model, with ice texture: both stages recorded
    ft = tmp_path / "ft.pt"
    assert main([*args[:3], str(ft), *args[4:], "--init-from", str(out), "--simulator", "p_textured=0.5"]) == 0
    ck = torch.load(ft, weights_only=True)
    assert [s["file"]["name"] if s["file"] else None for s in ck["stages"]] == ["s.pt", None]
    assert ck["config"]["data"]["p_textured"] == 0.5 and ck["config"]["init_from"] == str(out)
    assert main([*args[:3], str(tmp_path / "x.pt"), *args[4:], "--simulator", "snr=3"]) != 0
    assert "p_textured" in capsys.readouterr().err
    assert main([*args[:3], str(tmp_path / "x.pt"), *args[4:], "--simulator", "p_textured=2"]) != 0
    assert "p_textured" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()
    assert main([*args[:3], str(tmp_path / "x.pt"), *args[4:], "--simulator", "p_neighbours=1.5"]) != 0
    assert "p_neighbours" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()
    assert main([*args[:3], str(tmp_path / "x.pt"), *args[4:], "--simulator", "p_neighbours=some"]) != 0
    assert "p_neighbours" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()
    for bad, key in (
        ("p_size_matched=-0.1", "p_size_matched"),
        ("max_shift_px=40", "max_shift_px"),
        ("p_unflipped=1.2", "p_unflipped"),
    ):
        assert main([*args[:3], str(tmp_path / "x.pt"), *args[4:], "--simulator", bad]) != 0
        assert key in capsys.readouterr().err and not (tmp_path / "x.pt").exists()


def test_classify_takes_2d_particle_stacks_with_a_siamese_model(toy, tmp_path, capsys):
    from cryoshot.io.star import read_star_table, write_star

    star, model = toy
    blocks = read_star_blocks(star)
    t = blocks["particles"]
    sup = t.groupby("rlnClassNumber").head(3)
    write_star(star.parent / "support.star", {"optics": blocks["optics"], "particles": sup})
    out = tmp_path / "pred.star"
    rc = main(["classify", "--support", str(star.parent / "support.star"), "--query", str(star), "-o", str(out),
               "--model", str(model), "--no-unknown"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    pred = read_star_table(out)
    assert len(pred) == len(t) and set(pred["cryoshotPredictedClass"].astype(str)) <= {"1", "2"}
    assert {"cryoshotProb_1", "cryoshotProb_2", "cryoshotMinDistance", "cryoshotModel"} <= set(pred.columns)
    assert np.allclose(pred["cryoshotProb_1"] + pred["cryoshotProb_2"], 1.0, atol=1e-5)
    # the 3D model is refused with a clear message
    from tests.fewshot.helpers import tiny_checkpoint

    m3 = tiny_checkpoint(tmp_path / "m3.pt", method="protonet")
    assert main(["classify", "--support", str(star.parent / "support.star"), "--query", str(star), "-o",
                 str(tmp_path / "p2.star"), "--model", str(m3)]) != 0  # fmt: skip
    assert "Siamese" in capsys.readouterr().err


def test_siamese_training_images_with_ice_texture_differ_only_in_the_images():
    import torch

    from cryoshot.data.projection_triplets import ProjectionTriplets, TripletDataConfig

    cfg = TripletDataConfig(n_structures=2, n_views=2, per_view=2)
    a = ProjectionTriplets(["procedural:0-3"], cfg).batch(0)
    b = ProjectionTriplets(["procedural:0-3"], TripletDataConfig(**{**cfg.__dict__, "p_textured": 1.0})).batch(0)
    assert (a.labels == b.labels).all() and (a.structure == b.structure).all()
    assert not torch.allclose(a.images, b.images)


def test_siamese_training_images_with_neighbours_keep_the_central_particle():
    """Neighbours change the images, not the labels; they lie off-centre, so the centre of a noise-free image is
    the central particle's (the box's middle matches the image without neighbours, its edge does not)."""
    import torch

    from cryoshot.data.projection_triplets import ProjectionTriplets, TripletDataConfig, mass_radius_px

    cfg = TripletDataConfig(n_structures=2, n_views=2, per_view=2, snr_range=(1e6, 1e6), p_unflipped=1.0,
                            p_coloured=0.0, max_shift_px=0.0)  # fmt: skip
    a = ProjectionTriplets(["procedural:0-3"], cfg).batch(0)
    b = ProjectionTriplets(["procedural:0-3"], TripletDataConfig(**{**cfg.__dict__, "p_neighbours": 1.0})).batch(0)
    assert (a.labels == b.labels).all() and (a.structure == b.structure).all()
    assert not torch.allclose(a.images, b.images)
    # standardisation rescales each image, so compare shapes: the centre correlates, the rim does not
    ca, cb = a.images[:, 0, 28:36, 28:36].flatten(1), b.images[:, 0, 28:36, 28:36].flatten(1)
    centre = torch.nn.functional.cosine_similarity(ca - ca.mean(1, keepdim=True), cb - cb.mean(1, keepdim=True))
    assert centre.median() > 0.9
    # a uniform ball of radius 5 holds 90% of its mass within 0.9^(1/3) x 5 (on the grid, about that)
    yy, xx, zz = np.mgrid[:32, :32, :32] - 16
    assert abs(mass_radius_px((np.sqrt(yy**2 + xx**2 + zz**2) <= 5).astype(float)) - 0.9 ** (1 / 3) * 5) < 0.4


def test_size_matched_batches_hold_structures_close_in_size():
    """With p_size_matched = 1 every batch is one structure and others among the 2 n closest to it in radius;
    at 0 the batches are the same as without the option."""
    from cryoshot.data.projection_triplets import ProjectionTriplets, TripletDataConfig

    cfg = TripletDataConfig(n_structures=2, n_views=1, per_view=2)
    plain = ProjectionTriplets(["procedural:0-12"], cfg)
    matched = ProjectionTriplets(["procedural:0-12"], TripletDataConfig(**{**cfg.__dict__, "p_size_matched": 1.0}))
    radii = matched.radii_px
    gaps_matched, gaps_random = [], []
    for b in range(12):
        s = np.unique(matched.batch(b).structure)
        gaps_matched.append(abs(radii[s[0]] - radii[s[1]]))
        s = np.unique(plain.batch(b).structure)
        gaps_random.append(abs(radii[s[0]] - radii[s[1]]))
    for b in range(3):  # each pair is within the anchor's 4 nearest in radius
        chosen = matched.size_matched(2, np.random.default_rng(b))
        gap = np.sort(np.abs(radii - radii[chosen[0]]))[1:5]
        assert abs(radii[chosen[1]] - radii[chosen[0]]) <= gap[-1] + 1e-9
    assert np.mean(gaps_matched) < 0.5 * np.mean(gaps_random)
    same = ProjectionTriplets(["procedural:0-12"], TripletDataConfig(**{**cfg.__dict__, "p_size_matched": 0.0}))
    assert (same.batch(5).structure == plain.batch(5).structure).all()
