"""The cascade method: ProtoNet-CE's answers, template matching's for the ambiguous queries."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryoshot.cli import main
from cryoshot.fewshot.methods import make_method
from cryoshot.io.star import read_star_table
from cryoshot.models.loading import load_model
from tests.fewshot.helpers import tiny_checkpoint, toy_shape, write_toy_set


def _episode(rng, per_class=4, kinds=(0, 1, 2)):
    vols = np.stack([toy_shape(k, rng) for k in kinds for _ in range(per_class)])
    labels = np.repeat(np.arange(len(kinds)), per_class)
    return vols, labels


def test_cascade_interpolates_between_the_learned_method_and_template_matching(tmp_path):
    net, _ = load_model(tiny_checkpoint(tmp_path / "m.pt"))
    rng = np.random.default_rng(3)
    vols, labels = _episode(rng)
    sup = np.concatenate([np.flatnonzero(labels == c)[:2] for c in range(3)])
    qry = np.setdiff1d(np.arange(len(labels)), sup)
    ts = torch.as_tensor(labels[sup])
    cas = make_method("cascade", net, tilt_range=None)
    cas.verify_top, cas.fuse = None, False  # a verified query: every class, template matching's answer alone
    z = cas.embed(vols, 10.0, progress=False)
    assert z.shape[1] > net.encoder.dim  # the learned embedding and the working-grid particle side by side
    outs = {}
    for margin in (0.0, 1.01):
        cas.verify_margin = margin
        outs[margin] = cas.scores_and_distances(z[sup], ts, z[qry], 3)
    assert cas.last_verified == 1.0
    learned = make_method("protonet-ce", net)
    zl = learned.embed(vols, 10.0, progress=False)
    lp, ld = learned.scores_and_distances(zl[sup], ts, zl[qry], 3)
    torch.testing.assert_close(outs[0.0][0], lp)  # margin 0: ProtoNet-CE exactly
    tm = make_method("template", None, tilt_range=None)
    zt = tm.embed(vols, 10.0, progress=False)
    tp, _ = tm.scores_and_distances(zt[sup], ts, zt[qry], 3)
    torch.testing.assert_close(outs[1.01][0], tp, atol=1e-5, rtol=1e-4)  # everything verified: template's answers
    torch.testing.assert_close(outs[1.01][1], ld)  # distances (for unknown) stay the learned ones
    # a middle margin verifies only the queries whose top-two gap is small, and keeps the others as learned
    t = cas.temperature_for(cas._split(z[sup])[0], ts, 3)
    gap = torch.softmax(lp.detach() / t, dim=1).topk(2, dim=1).values  # calibrated gap
    gap = gap[:, 0] - gap[:, 1]
    cas.verify_margin = float(gap.median())
    mid, _ = cas.scores_and_distances(z[sup], ts, z[qry], 3)
    keep = gap >= cas.verify_margin
    assert 0 < keep.sum() < len(keep)
    torch.testing.assert_close(mid[keep], lp[keep])
    torch.testing.assert_close(mid[~keep], tp[~keep], atol=1e-5, rtol=1e-4)


def test_verify_top_matches_a_query_only_against_its_learned_top_classes(tmp_path):
    net, _ = load_model(tiny_checkpoint(tmp_path / "m.pt"))
    vols, labels = _episode(np.random.default_rng(5), kinds=(0, 1, 2, 3))
    sup = np.concatenate([np.flatnonzero(labels == c)[:2] for c in range(4)])
    qry = np.setdiff1d(np.arange(len(labels)), sup)
    ts = torch.as_tensor(labels[sup])
    cas = make_method("cascade", net, tilt_range=None)
    cas.verify_margin, cas.verify_top, cas.fuse = 1.01, None, False
    z = cas.embed(vols, 10.0, progress=False)
    full, _ = cas.scores_and_distances(z[sup], ts, z[qry], 4)
    cas.verify_top = 2
    top2, _ = cas.scores_and_distances(z[sup], ts, z[qry], 4)
    lp, _ = make_method("protonet-ce", net).scores_and_distances(cas._split(z[sup])[0], ts, cas._split(z[qry])[0], 4)
    allowed = torch.zeros_like(lp, dtype=torch.bool).scatter_(1, lp.topk(2, dim=1).indices, True)
    assert torch.isinf(top2[~allowed]).all() and torch.isfinite(top2[allowed]).all()  # probability 0 outside
    torch.testing.assert_close(top2.exp().sum(1), torch.ones(len(qry)))
    # within the two classes, template matching's NCC decides exactly as when every class is matched
    restricted = full.masked_fill(~allowed, float("-inf")).argmax(1)
    torch.testing.assert_close(top2.argmax(1), restricted)
    # fused: the normalised product of those probabilities and the calibrated learned ones
    cas.fuse = True
    fused, _ = cas.scores_and_distances(z[sup], ts, z[qry], 4)
    t = cas.temperature_for(cas._split(z[sup])[0], ts, 4)
    want = torch.log_softmax(top2 + torch.log_softmax(lp / t, dim=1), dim=1)
    torch.testing.assert_close(fused, want)
    assert torch.isinf(fused[~allowed]).all()


def test_calibration_temperature_follows_the_number_of_supports_and_the_embedding_scale():
    from cryoshot.fewshot.cascade import SHOT_SCALES, CascadeMethod, calibration_temperature, embedding_scale

    (k1, t1), (k5, t5) = SHOT_SCALES
    assert calibration_temperature(k1) == pytest.approx(t1) and calibration_temperature(k5) == pytest.approx(t5)
    assert calibration_temperature(0.5) == pytest.approx(t1) and calibration_temperature(50) == pytest.approx(t5)
    assert min(t1, t5) < calibration_temperature(2) < max(t1, t5)
    assert calibration_temperature(k5, 3000.0) == pytest.approx(3000.0 * t5)
    cas = CascadeMethod(learned=None, template=None)  # type: ignore[arg-type]
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2])  # the fewest supports of a class decide: 1
    emb = torch.ones(len(labels), 4) * torch.arange(1, len(labels) + 1)[:, None]  # squared norms 4 i^2
    assert embedding_scale(emb) == pytest.approx(4 * 36.0)  # the median (i = 6)
    assert cas.temperature_for(emb, labels, 3) == pytest.approx(t1 * 4 * 36.0)
    assert cas.temperature_for(2 * emb, labels, 3) == pytest.approx(4 * t1 * 4 * 36.0)  # twice the scale, 4x T
    cas.temperature = 7.0
    assert cas.temperature_for(emb, labels, 3) == 7.0


def test_cascade_through_classify(tmp_path):
    sup = write_toy_set(tmp_path / "sup", [0, 1], per_class=3, seed=1)
    qry = write_toy_set(tmp_path / "qry", [0, 1], per_class=4, seed=2)
    model = tiny_checkpoint(tmp_path / "m.pt")
    out = tmp_path / "pred.star"
    assert main(["classify", "--support", str(sup), "--query", str(qry), "--method", "cascade", "--model",
                 str(model), "--tilt-range", "none", "--no-unknown", "-o", str(out)]) == 0  # fmt: skip
    pred = read_star_table(out)
    assert len(pred) == 8 and set(pred["cryoshotPredictedClass"].astype(str)) <= {"1", "2"}
    probs = pred[[c for c in pred.columns if c.startswith("cryoshotProb_")]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
