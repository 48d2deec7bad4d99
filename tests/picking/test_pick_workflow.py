"""``cryoshot pick`` end to end on tiny simulated micrographs, and ``evaluate-picks``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cryoshot.cli import main
from cryoshot.evaluate.picks import evaluate_picks
from cryoshot.io.mrc import write_mrc
from cryoshot.io.star import read_star_table, write_star
from cryoshot.models.mae2d import load_mae
from cryoshot.picking.stage1 import Stage1Config
from cryoshot.picking.workflow import PickConfig, pick
from cryoshot.simulate.micrographs import MicrographConfig
from cryoshot.simulate.workflow import simulate_micrographs

DIAMETER = 160.0  # Å; 1bxn spans about 157 Å


@pytest.fixture(scope="module")
def easy(tmp_path_factory) -> Path:
    """Two 192^2 micrographs at 10 Å/px of 1bxn only, high SNR, dark protein; 10 exemplars on the first."""
    root = tmp_path_factory.mktemp("pick")
    cfg = MicrographConfig(size_px=192, pixel_size_A=10.0, particle_box_px=24, n_particles=30, snr=3.0,
                           ice_gradient=0.2, invert=True, seed=5)  # fmt: skip
    simulate_micrographs(["1bxn"], root / "data", cfg, 2, progress=False)
    truth = read_star_table(root / "data" / "coordinates.star")
    ex = truth[truth["rlnMicrographName"] == "mic_0000.mrc"].iloc[:10]
    write_star(root / "data" / "ex.star", ex[["rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY"]])
    return root


def _run(easy: Path, out: Path, **kw):
    mics = sorted(str(p) for p in (easy / "data").glob("mic_*.mrc"))
    cfg = PickConfig(
        diameter_A=DIAMETER, stage1=Stage1Config(steps=kw.pop("steps", 15))
    )  # no budget: same steps under load
    return pick(mics, kw.pop("exemplars", easy / "data" / "ex.star"), out, cfg, progress=False, log=lambda s: None,
                **kw)  # fmt: skip


def test_pick_finds_most_particles_of_an_easy_micrograph(easy):
    out = easy / "out1"
    res = _run(easy, out)
    assert res.stage1 is not None and res.stage1["steps"] == 15
    r = evaluate_picks(easy / "data" / "coordinates.star", out / "picks.star", DIAMETER)
    assert r["recall"] >= 0.7, r
    assert r["precision"] >= 0.6, r
    # RELION's columns, read back
    picks = read_star_table(out / "picks.star")
    for col in ("rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit"):
        assert col in picks.columns
    assert set(picks["rlnMicrographName"]) <= {str(p) for p in (easy / "data").glob("mic_*.mrc")}
    cands = []
    for mic in ("mic_0000", "mic_0001"):
        t = read_star_table(out / "coordinates" / f"{mic}_autopick.star")
        assert {"rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit"} <= set(t.columns)
        # every candidate is kept; the picks are its best rows, cut at one threshold shared by both micrographs
        c = read_star_table(out / "candidates" / f"{mic}_candidates.star")
        assert len(c) > len(t) > 0
        np.testing.assert_allclose(c["rlnCoordinateX"].to_numpy(float)[: len(t)], t["rlnCoordinateX"].to_numpy(float))
        cands.append((c["rlnAutopickFigureOfMerit"].to_numpy(float), len(t)))
    lowest_kept = min(fom[n - 1] for fom, n in cands)
    highest_cut = max(fom[n] for fom, n in cands)
    assert highest_cut < lowest_kept
    _, ck = load_mae(out / "picker.pt")
    assert ck["method"] == "picker" and len(ck["stages"]) >= 2  # pre-training + this stage 1
    assert ck["exemplars"]["n"] == 10
    assert [m["name"] for m in ck["exemplars"]["micrographs"]] == ["mic_0000.mrc"]  # the reference, with its sha256
    assert tuple(ck["template"].shape) == (ck["config"]["model"]["window_px"],) * 2  # the exemplars' template
    v = ck["views"]  # the Siamese opinion: the network itself, the exemplars' embeddings, their polarity
    assert tuple(v["features"].shape) == (10, v["config"]["dense"][-1]) and v["polarity"] == -1.0  # dark protein
    assert v["model"]["name"] == "siamese_cryoshot-polar.pt" and len(v["model"]["sha256"]) == 64
    assert v["pixel_size_A"] == 5.0  # a 160 Å particle is embedded at the network's own pixel size


def test_a_stored_view_pixel_size_is_reused_and_an_older_file_gets_the_networks_own(easy):
    from cryoshot.picking.workflow import _stored_views

    first = easy / "out1"
    if not first.exists():
        _run(easy, first)
    _, ck = load_mae(first / "picker.pt")
    ck["views"]["pixel_size_A"] = 8.0  # as a picker made for a 300 Å particle records it
    assert _stored_views(ck).view_pixel_A == 8.0
    ck["views"].pop("pixel_size_A")  # written before the view pixel size was kept
    assert _stored_views(ck).view_pixel_A == 5.0


def test_weights_zero_is_the_papers_cosine_ranking(easy):
    out = easy / "out_cosine"
    mics = sorted(str(p) for p in (easy / "data").glob("mic_*.mrc"))
    cfg = PickConfig(diameter_A=DIAMETER, template_weight=0.0, view_weight=0.0, stage1=Stage1Config(steps=15))
    pick(mics, easy / "data" / "ex.star", out, cfg, progress=False, log=lambda s: None)
    fom = read_star_table(out / "picks.star")["rlnAutopickFigureOfMerit"].to_numpy(float)
    assert len(fom) and (np.abs(fom) <= 1).all()  # cosine similarities
    r = evaluate_picks(easy / "data" / "coordinates.star", out / "picks.star", DIAMETER)
    assert r["recall"] >= 0.7, r


def test_picker_model_is_reused_without_retraining(easy):
    first = easy / "out1"
    if not first.exists():
        _run(easy, first)
    again = _run(easy, easy / "out2", model=str(first / "picker.pt"), exemplars=None)
    assert again.stage1 is None
    a = read_star_table(first / "picks.star")
    b = read_star_table(again.picks_star)
    assert len(a) == len(b)
    np.testing.assert_allclose(a["rlnCoordinateX"].to_numpy(float), b["rlnCoordinateX"].to_numpy(float), atol=1e-3)


def test_continue_skips_finished_micrographs(easy):
    out = easy / "out3"
    _run(easy, out, steps=2)
    res = _run(easy, out, steps=2, continue_=True)
    assert res.skipped == 2 and res.stage1 is None


def test_interrupted_run_keeps_progress_that_continue_uses(easy, monkeypatch):
    import cryoshot.picking.workflow as wf

    out = easy / "out4"
    real = wf.score_candidates
    calls = []

    def interrupt_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(wf, "score_candidates", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        _run(easy, out, steps=2)
    partial = easy / ".out4.cryoshot-partial"
    assert not out.exists() and (partial / "picker.pt").exists()
    monkeypatch.setattr(wf, "score_candidates", real)
    res = _run(easy, out, steps=2, continue_=True)
    assert res.skipped == 1 and res.stage1 is None
    assert out.exists() and not partial.exists()
    with pytest.raises(Exception, match="different"):  # other settings cannot continue it
        (partial / "x").parent.mkdir()
        (partial / wf.PARTIAL_MARK).write_text('{"config": {}}')
        _run(easy, out, steps=3, continue_=True)


def test_bad_exemplars_are_refused_before_any_work(easy, tmp_path):
    mics = sorted(str(p) for p in (easy / "data").glob("mic_*.mrc"))
    good = read_star_table(easy / "data" / "ex.star").assign(rlnMicrographName=mics[0])  # absolute names
    outside = tmp_path / "outside.star"
    write_star(outside, good.assign(rlnCoordinateX=5000.0))
    elsewhere = tmp_path / "elsewhere.star"
    write_star(elsewhere, read_star_table(easy / "data" / "ex.star").assign(rlnMicrographName="nosuch.mrc"))
    empty = tmp_path / "empty.star"
    write_star(empty, good.iloc[:0])
    cases = {outside: "outside micrograph", elsewhere: "not among the micrographs", empty: "no exemplars"}
    for star, msg in cases.items():
        with pytest.raises(Exception, match=msg):
            pick(mics, star, tmp_path / "o", PickConfig(diameter_A=DIAMETER), progress=False, log=lambda s: None)
        assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.*"))


@pytest.mark.parametrize("diameter,msg", [(5000.0, "more than the micrograph"), (20.0, "at least")])
def test_diameter_must_fit(easy, tmp_path, diameter, msg):
    mics = sorted(str(p) for p in (easy / "data").glob("mic_*.mrc"))
    with pytest.raises(Exception, match=msg):
        pick(mics, easy / "data" / "ex.star", tmp_path / "o", PickConfig(diameter_A=diameter), progress=False)


def test_volumes_stacks_and_nan_are_refused(easy, tmp_path):
    vol = tmp_path / "vol.mrc"
    write_mrc(vol, np.zeros((8, 64, 64), np.float32), 10.0)
    stack = tmp_path / "stack.mrcs"
    write_mrc(stack, np.zeros((3, 64, 64), np.float32), 10.0, stack=True)
    for bad, msg in ((vol, "3D volume"), (stack, "image stack")):
        with pytest.raises(Exception, match=msg):
            pick([str(bad)], easy / "data" / "ex.star", tmp_path / "o", PickConfig(diameter_A=DIAMETER))


def test_cli_pick_and_evaluate_picks_in_process(easy, capsys):
    mics = sorted(str(p) for p in (easy / "data").glob("mic_*.mrc"))
    out = easy / "cli_out"
    rc = main(["pick", *mics, "--exemplars", str(easy / "data" / "ex.star"), "--diameter", "160", "-o", str(out),
               "--steps", "5", "--preview", str(easy / "prev"), "--truth", str(easy / "data" / "coordinates.star")])  # fmt: skip
    assert rc == 0
    assert (out / "run.yaml").exists() and (out / "picks.star").exists()
    assert sorted(p.name for p in (easy / "prev").glob("*.png")) == ["mic_0000_picks.png", "mic_0001_picks.png"]
    capsys.readouterr()
    rc = main(["evaluate-picks", "--truth", str(easy / "data" / "coordinates.star"), "--picks", str(out / "picks.star"),
               "--diameter", "160", "--json"])  # fmt: skip
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"precision", "recall", "f1", "n_picks", "n_truth"} <= set(res)
    assert res["n_truth"] == len(read_star_table(easy / "data" / "coordinates.star"))
    # without --force the same output is refused and left as it was
    rc = main(["pick", *mics, "--exemplars", str(easy / "data" / "ex.star"), "--diameter", "160", "-o", str(out)])
    assert rc != 0 and "--force" in capsys.readouterr().err


def test_leave_one_out_scan_scores_each_exemplar_by_the_others_only(easy):
    from cryoshot.picking.micrograph import bin_micrograph, read_micrograph
    from cryoshot.picking.scan import exemplar_features, score_map
    from cryoshot.pretrained import resolve_picker_model

    net, _ = load_mae(resolve_picker_model("default"))
    img, ps = read_micrograph(easy / "data" / "mic_0000.mrc")
    b = bin_micrograph(img, ps, DIAMETER, net.config.particle_px)
    ex = read_star_table(easy / "data" / "ex.star")
    xy = b.to_binned(ex[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float))[:4]
    feats = exemplar_features(net, b.image, xy)
    r = 0.5 * net.config.particle_px
    full, xs, ys = score_map(net, b.image, feats, 2)
    loo, _, _ = score_map(net, b.image, feats, 2, exclude=(xy, r))
    gx, gy = np.meshgrid(xs, ys)
    d2 = np.stack([(gx - x) ** 2 + (gy - y) ** 2 for x, y in xy])  # (4, gy, gx)
    assert (loo <= full + 1e-6).all()
    for j in range(len(xy)):
        at = np.unravel_index(np.argmin(d2[j]), gx.shape)
        assert full[at] > 0.99  # the exemplar's own window matches itself
        only_j = (d2[j] <= r**2) & (np.delete(d2, j, axis=0) > r**2).all(axis=0)
        others, _, _ = score_map(net, b.image, feats[np.arange(len(xy)) != j], 2)
        assert only_j.sum() > 3
        assert np.allclose(loo[only_j], others[only_j], atol=1e-5)  # near it: the other exemplars' scores
    far = (d2 > r**2).all(axis=0)
    assert np.allclose(loo[far], full[far], atol=1e-6)  # elsewhere: unchanged


def test_a_picker_file_without_a_template_or_views_still_picks_by_cosine(easy, tmp_path):
    from cryoshot.models.checkpoint import load_checkpoint, save_checkpoint

    first = easy / "out1"
    if not first.exists():
        _run(easy, first)
    ck = load_checkpoint(first / "picker.pt")
    ck.pop("template")  # as written before templates and the Siamese opinion were kept
    ck.pop("views")
    old = tmp_path / "old_picker.pt"
    save_checkpoint(old, {k: v for k, v in ck.items() if k not in ("format", "version")})
    res = _run(easy, tmp_path / "out", model=str(old), exemplars=None)
    fom = read_star_table(res.picks_star)["rlnAutopickFigureOfMerit"].to_numpy(float)
    assert len(fom) and (np.abs(fom) <= 1).all()  # cosine similarities: no template to mix in


def test_the_picker_works_at_the_scaled_diameter(easy, tmp_path):
    """``diameter_scale`` s with --diameter D/s picks exactly as scale 1 with D: every internal size (binning,
    flattening, NMS) follows the working diameter (the view network's pixel size follows the typed one, and is its
    own for both diameters here); a scale outside 0.5..1.5 is refused; the default caps large ones."""
    mics = sorted(str(p) for p in (easy / "data").glob("mic_*.mrc"))
    st = Stage1Config(steps=5)
    outs = []
    for k, (d, s) in enumerate([(DIAMETER, 1.0), (DIAMETER / 0.9, 0.9)]):
        cfg = PickConfig(diameter_A=d, diameter_scale=s, stage1=st)
        assert cfg.work_diameter_A == pytest.approx(DIAMETER)
        pick(mics, easy / "data" / "ex.star", tmp_path / f"o{k}", cfg, progress=False, log=lambda s: None)
        outs.append(read_star_table(tmp_path / f"o{k}" / "candidates" / "mic_0001_candidates.star"))
    np.testing.assert_allclose(outs[0].to_numpy(float), outs[1].to_numpy(float))
    with pytest.raises(Exception, match="diameter scale"):
        PickConfig(diameter_A=DIAMETER, diameter_scale=0.3).validate()
    # by default a particle above 180 Å is binned as if it were 180 Å, but at least 0.65 of its size
    assert [PickConfig(diameter_A=d).work_diameter_A for d in (160.0, 180.0, 256.0, 320.0, 1000.0)] == [
        160.0,
        180.0,
        180.0,
        208.0,
        650.0,
    ]


def test_a_stored_pickers_reference_micrographs_are_known_by_name_and_content(tmp_path):
    """A reused picker.pt leaves its reference micrographs out of the pooled cut's fit, as the run that made it did;
    a file of the same name with other content is not its reference."""
    from cryoshot.picking.workflow import _exemplars_entry, _stored_references

    ex = tmp_path / "ex.star"
    ex.write_text("data_\n")
    a, b = tmp_path / "a" / "mic_0000.mrc", tmp_path / "b" / "mic_0000.mrc"
    for p, text in ((a, "one"), (b, "two")):
        p.parent.mkdir()
        p.write_text(text)
    other = tmp_path / "mic_0001.mrc"
    other.write_text("one")  # the reference's content under another name
    ck = {"exemplars": _exemplars_entry(ex, 3, [a])}
    assert _stored_references(ck, [other, a, b]) == [1]
    c = tmp_path / "mic_0002.mrc"
    c.write_text("two")  # a second reference: b has its content and the first reference's name, so it is neither
    assert _stored_references({"exemplars": _exemplars_entry(ex, 3, [a, c])}, [a, b, c]) == [0, 2]
    assert _stored_references({"exemplars": {"name": "ex.star", "n": 3}}, [a]) == []  # a picker.pt from before
