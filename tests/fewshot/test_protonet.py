import contextlib
import json

import numpy as np
import pytest
import torch

from cryoshot.cli import main
from cryoshot.data.episodes import EpisodeSampler
from cryoshot.errors import CryoshotError
from cryoshot.evaluate.fewshot import evaluate_episodes
from cryoshot.fewshot.methods import make_method
from cryoshot.io.particles import load_subtomogram_set
from cryoshot.io.star import read_star_table
from cryoshot.models.checkpoint import load_checkpoint, save_checkpoint
from cryoshot.models.embedding import embed_volumes
from cryoshot.models.encoders3d import encoder_config
from cryoshot.models.loading import load_model
from cryoshot.models.protonet import ProtoNet, prototypes
from cryoshot.train.loop import build_model, train

from .helpers import BOX, tiny_checkpoint, tiny_config, toy_shape, write_toy_set


def test_episodes_shape_disjoint_and_reproducible():
    labels = np.repeat(np.arange(7), 10)
    s = EpisodeSampler(labels, way=5, shot=3, query=4, seed=1)
    ep = s.episode(0)
    assert ep.support.shape == (5, 3) and ep.query.shape == (5, 4) and len(set(ep.classes)) == 5
    assert not set(ep.support.ravel()) & set(ep.query.ravel())
    for j, c in enumerate(ep.classes):
        assert np.all(labels[ep.support[j]] == c) and np.all(labels[ep.query[j]] == c)
    np.testing.assert_array_equal(EpisodeSampler(labels, 5, 3, 4, seed=1).episode(0).query, ep.query)
    assert not np.array_equal(s.episode(1).query, ep.query)


def test_episode_errors_name_the_problem():
    labels = np.array(["a"] * 10 + ["b"] * 3 + ["c"] * 10)
    with pytest.raises(CryoshotError, match="class b has 3"):
        EpisodeSampler(labels, 2, 5, 0)
    with pytest.raises(CryoshotError, match="larger than the number of classes"):
        EpisodeSampler(labels, 4, 1, 1)
    with pytest.raises(CryoshotError, match="--shot"):
        EpisodeSampler(labels, 2, 0, 1)
    with pytest.raises(CryoshotError, match="--way"):
        EpisodeSampler(labels, 0, 1, 1)


def _toy_batch(kinds, per_class, seed=0):
    rng = np.random.default_rng(seed)
    x = np.stack([toy_shape(k, rng) for k in kinds for _ in range(per_class)])
    y = np.repeat(np.arange(len(kinds)), per_class)
    return torch.from_numpy(x), torch.from_numpy(y)


def test_protonet_separates_easy_toy_classes():
    torch.manual_seed(0)
    model = ProtoNet(encoder_config("cryoshot-tiny", input_box=BOX), adapter=False).eval()
    x, y = _toy_batch([0, 1, 2, 3, 4], 8)
    z = model.embed(x).detach()
    res = evaluate_episodes(make_method("protonet", model), z, y.numpy(), name="protonet", way=5, shot=3,
                            query=5, episodes=20, progress=False)  # fmt: skip
    assert res["accuracy_mean"] > 0.9


def test_loss_falls_within_a_few_steps():
    torch.manual_seed(0)
    model = ProtoNet(encoder_config("cryoshot-tiny", input_box=BOX), adapter=False)
    x, y = _toy_batch([0, 5, 2], 6, seed=3)  # ball vs cube is not trivially separable at init
    sup = torch.cat([torch.arange(i * 6, i * 6 + 2) for i in range(3)])
    qry = torch.cat([torch.arange(i * 6 + 2, i * 6 + 6) for i in range(3)])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        z = model.embed(x)
        logits = -model.distances(z[sup], y[sup], z[qry], 3, "d")
        loss = torch.nn.functional.cross_entropy(logits, y[qry])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_combined_distance_is_the_sum():
    torch.manual_seed(0)
    model = ProtoNet(encoder_config("cryoshot-tiny", input_box=BOX), adapter=True).eval()
    torch.nn.init.normal_(model.adapter.fc.weight, std=0.1)  # non-trivial adapter
    zs, zq = torch.randn(6, model.encoder.dim), torch.randn(9, model.encoder.dim)
    ts = torch.tensor([0, 0, 1, 1, 2, 2])
    with torch.no_grad():
        d = model.distances(zs, ts, zq, 3, "d")
        ds = model.distances(zs, ts, zq, 3, "d*")
        both = model.distances(zs, ts, zq, 3, "d+d*")
    torch.testing.assert_close(both, d + ds)
    assert not torch.allclose(d, ds)
    torch.testing.assert_close(prototypes(zs, ts, 3)[1], zs[2:4].mean(0))


def test_train_save_load_resume(tmp_path):
    out = tmp_path / "m.pt"
    r1 = train(tiny_config("protonet", episodes=4), out, progress=False)
    assert r1["episodes"] == 4 and out.exists() and (tmp_path / "m.pt.last").exists()
    ck = load_checkpoint(out)
    assert {"state_dict", "config", "version", "seed", "argv", "method"} <= set(ck)
    with pytest.raises(CryoshotError, match="exists"):
        train(tiny_config("protonet", episodes=4), out, progress=False)
    with pytest.raises(CryoshotError, match=r"lr: 0.001 in the checkpoint, 0.01 now"):  # other settings: refused
        train(tiny_config("protonet", episodes=6, lr=1e-2), out, resume=True, progress=False)
    r2 = train(tiny_config("protonet", episodes=6), out, resume=True, progress=False)
    assert r2["episodes"] == 6 and [h["episode"] for h in r2["history"]] == [2, 4, 6]
    model, _ = load_model(out)
    assert isinstance(model, ProtoNet) and not model.training
    ce = tmp_path / "ce.pt"
    train(tiny_config("protonet-ce", episodes=4, init_from=str(out)), ce, progress=False)  # steps after a validation
    ce_model, ce_ck = load_model(ce, method="protonet-ce")
    # provenance of both stages: the frozen protonet (with its file's hash), then this head
    assert [st["method"] for st in ce_ck["stages"]] == ["protonet", "protonet-ce"]
    assert ce_ck["stages"][0]["config"]["method"] == "protonet" and len(ce_ck["stages"][0]["file"]["sha256"]) == 64
    assert ce_ck["stages"][1]["config"]["init_from"] == str(out) and ce_ck["stages"][1]["file"] is None
    last = load_checkpoint(tmp_path / "ce.pt.last")["state_dict"]  # the state after the last step
    for k, v in model.encoder.state_dict().items():  # the encoder stayed frozen, BatchNorm statistics included
        torch.testing.assert_close(ce_model.encoder.state_dict()[k], v)
        torch.testing.assert_close(last["encoder." + k], v)
    with pytest.raises(CryoshotError, match="pass --encoder cryoshot-tiny"):
        train(tiny_config("protonet-ce", episodes=2, init_from=str(out), encoder="cryoshot-small"), tmp_path / "x.pt",
              progress=False)  # fmt: skip
    with pytest.raises(CryoshotError, match="'protonet' model"):
        load_checkpoint(out, method="protonet-ce")
    bad = load_checkpoint(out)
    bad["version"] = "99.0.0"
    save_checkpoint(tmp_path / "old.pt", bad)
    with pytest.raises(CryoshotError, match="cannot read"):
        load_checkpoint(tmp_path / "old.pt")


def test_evaluate_json_keys(tmp_path, capsys):
    star = write_toy_set(tmp_path / "data", [0, 1, 2, 3, 4], per_class=8)
    model = tiny_checkpoint(tmp_path / "tiny.pt")
    # Easy toy classes, 3-way (chance 1/3), 45 queries. Measured with this untrained tiny model: protonet and
    # protonet-ce 0.96, finetune 0.80; lowest over model seeds 0-19: 0.96, 0.96, 0.69. Random scores or
    # shuffled support labels give 0.33 +- 0.07.
    floor = {"protonet": 0.85, "protonet-ce": 0.85, "finetune": 0.6}
    for method in ("protonet", "protonet-ce", "finetune"):
        rc = main(["evaluate", str(star), "--model", str(model), "--method", method, "--way", "3", "--shot", "2",
                   "--query", "3", "--episodes", "5", "--json"])  # fmt: skip
        assert rc == 0
        res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        keys = {"method", "way", "shot", "query", "episodes", "accuracy_mean", "accuracy_ci95", "macro_precision",
                "per_class_accuracy"}  # fmt: skip
        assert keys <= set(res) and res["method"] == method
        assert res["accuracy_mean"] > floor[method], (method, res["accuracy_mean"])
        assert set(res["per_class_accuracy"]) <= {"1", "2", "3", "4", "5"}
    assert main(["evaluate", str(star), "--model", str(model), "--shot", "9"]) == 2
    assert "class 1 has 8" in capsys.readouterr().err
    assert main(["evaluate", str(star), "--model", str(model), "--label-column", "rlnNope"]) == 2
    assert "rlnNope" in capsys.readouterr().err


def test_classify_round_trip_and_unknown(tmp_path, capsys):
    model = tiny_checkpoint(tmp_path / "tiny.pt")
    sup = write_toy_set(tmp_path / "sup", [0, 1, 4], per_class=5, seed=1)
    qry = write_toy_set(tmp_path / "qry", [0, 1, 4, 3], per_class=6, seed=2)
    out = tmp_path / "pred.star"
    rc = main(["classify", "--support", str(sup), "--query", str(qry), "--model", str(model), "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    pred = read_star_table(out)
    truth = read_star_table(qry)
    assert len(pred) == len(truth)
    # image paths are rewritten relative to the output, so classify's output is average's input
    assert not (pred["rlnImageName"] == truth["rlnImageName"]).any()
    again = load_subtomogram_set(out, label_column=None, progress=False).volumes
    assert np.array_equal(again, load_subtomogram_set(qry, label_column=None, progress=False).volumes)
    assert {"cryoshotPredictedClass", "cryoshotProbability", "cryoshotProb_1"} <= set(pred.columns)
    known = truth["rlnClassNumber"] != 4  # kind 3 (a ring) is absent from the support
    pc = pred["cryoshotPredictedClass"].astype(str)
    assert (pc[known] == truth["rlnClassNumber"][known].astype(str)).mean() > 0.8
    assert (pc[~known] == "unknown").mean() > 0.5  # the absent class mostly comes back unknown
    assert (pc[known] == "unknown").mean() < 0.3
    # no overwrite without --force, and the shot requirement names the class
    assert main(["classify", "--support", str(sup), "--query", str(qry), "--model", str(model), "-o", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    rc = main(["classify", "--support", str(sup), "--query", str(qry), "--model", str(model), "-o",
               str(tmp_path / "p2.star"), "--shot", "6"])  # fmt: skip
    assert rc == 2 and "has 5 examples" in capsys.readouterr().err
    # a looser threshold rejects no more than the default; a quantile outside (0, 1] is an error
    loose = tmp_path / "loose.star"
    rc = main(["classify", "--support", str(sup), "--query", str(qry), "--model", str(model), "-o", str(loose),
               "--unknown-margin", "100"])  # fmt: skip
    assert rc == 0 and (read_star_table(loose)["cryoshotPredictedClass"].astype(str) == "unknown").sum() == 0
    rc = main(["classify", "--support", str(sup), "--query", str(qry), "--model", str(model), "-o",
               str(tmp_path / "p3.star"), "--unknown-quantile", "0"])  # fmt: skip
    assert rc == 2 and "quantile" in capsys.readouterr().err


def test_embedding_resamples_other_box_sizes():
    torch.manual_seed(0)
    model = ProtoNet(encoder_config("cryoshot-tiny", input_box=BOX), adapter=False).eval()
    vols = np.random.default_rng(0).normal(size=(3, 24, 24, 24)).astype(np.float32)
    z = embed_volumes(model, vols, voxel_size_A=6.0, progress=False)
    assert z.shape == (3, model.encoder.dim) and torch.isfinite(z).all()


def test_nan_volume_is_rejected(tmp_path):
    star = write_toy_set(tmp_path / "d", [0], per_class=2)
    import mrcfile

    with mrcfile.open(tmp_path / "d" / "k0_000.mrc", mode="r+") as m:
        m.data[0, 0, 0] = np.nan
    with pytest.raises(CryoshotError, match="NaN"):
        load_subtomogram_set(star, progress=False)


def test_finetune_pretraining_trains_a_base_classifier_and_its_loss_falls(tmp_path, capsys):
    out = tmp_path / "ft.pt"
    cfg = tiny_config("finetune", episodes=12, lr=3e-3, val_every=6)
    res = train(cfg, out, progress=False)
    model, ck = load_model(out, method="finetune")
    assert ck["method"] == "finetune" and model.classifier.out_features == 6 and res["episodes"] == 12
    from cryoshot.data.synthetic import VolumePool

    pool = VolumePool(cfg.pool, progress=False)
    x, y = pool.batch(6, 4, np.random.default_rng(0), augment=False)
    assert sorted(set(y.tolist())) == list(range(6))
    fresh = build_model(cfg)
    with torch.no_grad():
        before = torch.nn.functional.cross_entropy(fresh.classifier(fresh.embed(x)), y)
        after = torch.nn.functional.cross_entropy(model.classifier(model.embed(x)), y)
    assert after < before
    star = write_toy_set(tmp_path / "data", [0, 1, 2], per_class=6)
    assert main(["evaluate", str(star), "--model", str(out), "--method", "finetune", "--way", "3", "--shot", "2",
                 "--query", "3", "--episodes", "2"]) == 0  # fmt: skip


def test_validation_on_pool_embeddings_equals_embedding_each_episode():
    from cryoshot.data.synthetic import PoolConfig, VolumePool
    from cryoshot.train.loop import _episode_loss, build_model, validate

    cfg = tiny_config("protonet", val_episodes=5)
    pool = VolumePool(PoolConfig(n_procedural=4, bundled=[], items_per_class=5, box_px=16, pixel_size_A=10.0),
                      progress=False)  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    direct = []
    for e in range(cfg.val_episodes):
        x, ts, tq = pool.episode(cfg.way, cfg.shot, cfg.query, np.random.default_rng([cfg.seed, 7, e]), augment=False)
        with torch.no_grad():
            direct.append(_episode_loss(model, x, ts, tq, cfg.way, "protonet", contextlib.nullcontext)[1])
    assert validate(model, pool, cfg, torch.device("cpu"), contextlib.nullcontext) == pytest.approx(np.mean(direct))


def test_protonet_ce_embedding_cache_gives_the_episode_embeddings():
    """The frozen-encoder cache, indexed by an episode's plan, equals embedding that episode's rotated volumes."""
    from cryoshot.data.synthetic import PoolConfig, VolumePool
    from cryoshot.train.loop import build_model, embed_pool_rotations

    cfg = tiny_config("protonet-ce")
    pool = VolumePool(PoolConfig(n_procedural=4, bundled=[], items_per_class=5, box_px=16, pixel_size_A=10.0),
                      progress=False)  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    cache = embed_pool_rotations(model, pool, torch.device("cpu"), contextlib.nullcontext, chunk=7, progress=False)
    assert cache.shape == (4, 4, 5, model.encoder.dim)
    for e in range(3):
        cls, its, flips = pool.episode_plan(cfg.way, cfg.shot, cfg.query, np.random.default_rng([1, e]))
        x, ts, tq = pool.episode(cfg.way, cfg.shot, cfg.query, np.random.default_rng([1, e]))
        assert len(set(flips.tolist())) > 1  # the episode really mixes rotations
        with torch.no_grad():
            direct = model.embed(x)
        torch.testing.assert_close(cache[flips, cls, its], direct, rtol=1e-4, atol=1e-5)


class _Euclid:
    """A stand-in method: squared Euclidean distance to class means."""

    def distances(self, zs, ts, zq, n):
        protos = torch.stack([zs[ts == c].mean(0) for c in range(n)])
        return torch.cdist(zq, protos).pow(2)


def test_unknown_threshold_rules():
    from cryoshot.fewshot.openset import ONE_SHOT_SCALE, loo_threshold, support_threshold

    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 20.0]])
    ts1 = torch.arange(3)
    # K = 1: the nearest other class is at 10, 10, sqrt(500) -> squared 100, 100, 500; median 100
    assert support_threshold(_Euclid(), centres, ts1, 3, margin=2.0) == pytest.approx(ONE_SHOT_SCALE * 2.0 * 100)
    assert support_threshold(_Euclid(), centres[:1], ts1[:1], 1) is None  # one class, one example: no scale
    rng = torch.Generator().manual_seed(0)
    zs = centres.repeat_interleave(3, 0) + torch.randn(9, 2, generator=rng)
    ts = torch.arange(3).repeat_interleave(3)
    assert support_threshold(_Euclid(), zs, ts, 3) == loo_threshold(_Euclid(), zs, ts, 3) is not None


def test_classify_one_shot_has_an_unknown_threshold(tmp_path, capsys):
    model = tiny_checkpoint(tmp_path / "tiny.pt")
    sup = write_toy_set(tmp_path / "sup", [0, 1, 4], per_class=1, seed=1)
    qry = write_toy_set(tmp_path / "qry", [0, 1, 4, 3], per_class=6, seed=2)
    out = tmp_path / "pred.star"
    rc = main(["classify", "--support", str(sup), "--query", str(qry), "--model", str(model), "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert "unknown threshold: none" not in capsys.readouterr().out
    pred, truth = read_star_table(out), read_star_table(qry)
    pc, known = pred["cryoshotPredictedClass"].astype(str), truth["rlnClassNumber"] != 4
    # (an untrained tiny model: its 1-shot embedding is weak, so only the ordering is asserted)
    assert (pc[~known] == "unknown").mean() > 0.8 and (pc[~known] == "unknown").mean() > (pc[known] == "unknown").mean()
    rc = main(["classify", "--support", str(sup), "--query", str(qry), "--model", str(model), "-o",
               str(tmp_path / "all.star"), "--no-unknown"])  # fmt: skip
    forced = read_star_table(tmp_path / "all.star")["cryoshotPredictedClass"].astype(str)
    assert rc == 0 and (pc[pc != "unknown"] == forced[pc != "unknown"]).all()  # the threshold only relabels


def test_bf16_inference_matches_fp32_and_precision_is_checked(monkeypatch):
    from cryoshot.models.embedding import use_bf16

    torch.manual_seed(0)
    model = ProtoNet(encoder_config("cryoshot-tiny", input_box=BOX), adapter=False).eval()
    vols = np.stack([toy_shape(k % 4, np.random.default_rng(k)) for k in range(12)])
    a = embed_volumes(model, vols, 10.0, progress=False, precision="fp32")
    b = embed_volumes(model, vols, 10.0, progress=False, precision="bf16")
    assert b.dtype == torch.float32 and torch.nn.functional.cosine_similarity(a, b).min() > 0.99
    assert not use_bf16(torch.device("cuda"), "auto") and use_bf16(torch.device("cpu"), "bf16")
    monkeypatch.setenv("CRYOSHOT_PRECISION", "fp32")
    assert not use_bf16(torch.device("cpu"))
    monkeypatch.setenv("CRYOSHOT_PRECISION", "half")
    with pytest.raises(CryoshotError, match="CRYOSHOT_PRECISION"):
        use_bf16(torch.device("cpu"))


def test_classify_says_when_support_and_query_voxel_sizes_differ(tmp_path, capsys):
    from cryoshot.io.mrc import read_mrc, write_mrc

    model = tiny_checkpoint(tmp_path / "tiny.pt")
    sup = write_toy_set(tmp_path / "sup", [0, 1], per_class=3, seed=1)
    qry = write_toy_set(tmp_path / "qry", [0, 1], per_class=2, seed=2)
    for f in (tmp_path / "qry").glob("*.mrc"):
        data = read_mrc(f).data.copy()
        f.unlink()
        write_mrc(f, data, 12.5)
    rc = main(["classify", "--support", str(sup), "--query", str(qry), "--model", str(model), "-o",
               str(tmp_path / "p.star")])  # fmt: skip
    cap = capsys.readouterr()
    assert rc == 0 and "voxel sizes differ" in " ".join(cap.err.split())
    assert "support 10 Å, query 12.5 Å" in cap.out
