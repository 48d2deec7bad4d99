"""IoU matching, non-maximum suppression and the automatic thresholds on hand-made cases."""

import numpy as np
import pytest

from cryoshot.picking.matching import average_precision, box_iou, count_matches, match_picks
from cryoshot.picking.scan import greedy_nms, peaks
from cryoshot.picking.threshold import (
    auto_threshold,
    density_threshold,
    gmm3_threshold,
    gmm_threshold,
    pooled_threshold,
    tail_threshold,
)
from cryoshot.picking.workflow import PickConfig, cut_candidates, micrograph_thresholds


def test_box_iou_hand_values():
    assert box_iou(np.array(0.0), np.array(0.0), 10) == pytest.approx(1.0)
    # shifted by half a side in x: overlap 50, union 150
    assert box_iou(np.array(5.0), np.array(0.0), 10) == pytest.approx(50 / 150)
    assert box_iou(np.array(10.0), np.array(0.0), 10) == 0


def test_two_picks_on_one_particle_give_one_true_and_one_false_positive():
    truth = np.array([[100.0, 100.0], [300.0, 300.0]])
    picks = np.array([[101.0, 99.0], [103.0, 102.0], [500.0, 500.0]])
    hit = match_picks(picks, truth, side=40, scores=np.array([0.9, 0.8, 0.7]))
    assert hit.tolist() == [True, False, False]
    c = count_matches(picks, truth, 40, np.array([0.9, 0.8, 0.7]))
    assert (c.tp, c.n_picks, c.n_truth) == (1, 3, 2)
    assert c.precision == pytest.approx(1 / 3) and c.recall == pytest.approx(0.5)
    assert c.f1 == pytest.approx(2 * (1 / 3) * 0.5 / (1 / 3 + 0.5))


def test_iou_rule_is_strict_at_one_half():
    truth = np.array([[0.0, 0.0]])
    # IoU of a 10 px box shifted by d in x is (10 - d) / (10 + d): >= 0.5 for d <= 10/3
    assert match_picks(np.array([[3.3, 0.0]]), truth, 10).tolist() == [True]
    assert match_picks(np.array([[3.4, 0.0]]), truth, 10).tolist() == [False]


def test_better_scored_pick_takes_the_particle():
    truth = np.array([[0.0, 0.0]])
    picks = np.array([[2.0, 0.0], [0.0, 0.0]])
    assert match_picks(picks, truth, 10, scores=np.array([0.1, 0.9])).tolist() == [False, True]


def test_average_precision_perfect_and_poor():
    truth = np.array([[0.0, 0.0], [50.0, 50.0]])
    good = average_precision(np.array([[0, 0], [50, 50], [90, 90]]), np.array([3, 2, 1.0]), truth, 10)
    bad = average_precision(np.array([[0, 0], [50, 50], [90, 90]]), np.array([1, 2, 3.0]), truth, 10)
    assert good == pytest.approx(1.0) and bad < good


def test_greedy_nms_keeps_best_first_and_spares_far_points():
    xy = np.array([[0.0, 0.0], [3.0, 0.0], [20.0, 0.0], [22.0, 0.0], [6.0, 0.0]])
    # 0 suppresses 1 (3 px); 4 is 6 px from 0 and 3 px from the dropped 1: kept
    assert greedy_nms(xy, 5.0).tolist() == [0, 2, 4]


def test_peaks_give_one_pick_per_blob_with_subpixel_centre():
    yy, xx = np.mgrid[0:40, 0:40].astype(float)
    scores = np.exp(-((xx - 10.3) ** 2 + (yy - 20) ** 2) / 8) + 0.8 * np.exp(-((xx - 30) ** 2 + (yy - 9.6) ** 2) / 8)
    xs, ys = np.arange(40) * 2.0, np.arange(40) * 2.0  # a grid of step 2 (binned px)
    xy, s = peaks(scores, xs, ys, min_distance=8.0)
    assert len(xy) == 2 and s[0] > s[1]
    assert xy[0] == pytest.approx([20.6, 40.0], abs=0.3)
    assert xy[1] == pytest.approx([60.0, 19.2], abs=0.3)


def _two_groups(n_bg=600, n_fg=60, seed=0):
    """Dense background peaks and fewer, spread-out particle peaks (as after stage 1)."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0.2, 0.04, n_bg), rng.uniform(0.5, 0.9, n_fg)])


@pytest.mark.parametrize("rule", [density_threshold, tail_threshold, gmm_threshold])
def test_thresholds_cut_between_background_and_particles(rule):
    # (not gmm3: it gives a spread of particle scores two components and keeps the upper one; see below)
    s = _two_groups()
    t = rule(s)
    assert (s[600:] > t).all(), t  # every particle kept
    assert (s[:600] > t).sum() <= 20, t  # at most a few background peaks


def test_three_components_keep_the_top_kind_and_two_keep_every_particle():
    """Background, another protein scoring in between, and the exemplars' kind on top."""
    rng = np.random.default_rng(1)
    s = np.concatenate([rng.normal(-0.5, 0.3, 400), rng.normal(1.0, 0.2, 60), rng.normal(2.2, 0.2, 60)])
    t2, t3 = gmm_threshold(s), gmm3_threshold(s)
    assert (s[400:] > t2).mean() > 0.95  # two components: every particle, the other protein too
    assert (s[460:] > t3).mean() > 0.95 and (s[400:460] > t3).mean() < 0.05  # three: the top kind only
    assert (s[:400] > t3).sum() == 0


def test_density_threshold_finds_the_knee_of_a_synthetic_list():
    # sparse particle scores at the top, then a dense background: the knee is where density jumps
    s = np.concatenate([np.linspace(0.9, 0.5, 50), np.linspace(0.4, 0.0, 2000)])
    t = density_threshold(s)
    assert 0.4 < t < 0.5
    assert (s > t).sum() == 50


def test_pooled_cut_is_one_fit_to_the_candidates_of_the_micrographs_it_is_fitted_on():
    rng = np.random.default_rng(3)
    # three micrographs: background, other proteins, the exemplars' kind; the third holds few of its kind
    mics = [
        np.concatenate([rng.normal(0, 0.5, 300), rng.normal(2, 0.3, 60), rng.normal(4, 0.3, n)]) for n in (60, 50, 3)
    ]
    t = pooled_threshold(mics, "gmm3-pooled", fisher=False)
    assert t == auto_threshold(np.concatenate(mics), "gmm3", fisher=False)
    assert 2.5 < t < 3.7  # between the other proteins and the exemplars' kind
    # alone, the third micrograph's mixture gives its other proteins the top component
    assert gmm3_threshold(mics[2]) < 2.5
    # the workflow's cut: one threshold for all, fitted without the reference micrograph (index 0 here),
    # where the exemplars match themselves
    ref = np.concatenate([mics[0], np.full(15, 40.0)])
    cfg = PickConfig(diameter_A=100.0, threshold="auto")
    got = micrograph_thresholds([ref, mics[1], mics[2]], cfg, fused=True, fit_on=[1, 2])
    assert got == [pooled_threshold(mics[1:], "gmm3", fisher=False)] * 3
    per = micrograph_thresholds(mics, PickConfig(diameter_A=100.0, threshold="gmm3"), fused=True, fit_on=[0])
    assert per == [gmm3_threshold(m) for m in mics]
    assert micrograph_thresholds(mics, PickConfig(diameter_A=100.0, threshold="1.5"), True, [0]) == [1.5] * 3


def test_cut_candidates_keeps_the_best_rows_at_or_above_the_threshold():
    import pandas as pd

    c = pd.DataFrame({"rlnCoordinateX": [1.0, 2, 3, 4], "rlnCoordinateY": [5.0, 6, 7, 8],
                      "rlnAutopickFigureOfMerit": [3.0, 2.0, 1.0, 0.5]})  # fmt: skip
    assert list(cut_candidates(c, 1.0, None)["rlnCoordinateX"]) == [1, 2, 3]
    assert list(cut_candidates(c, 1.0, 2)["rlnCoordinateY"]) == [5, 6]
    assert len(cut_candidates(c, 9.0, None)) == 0 and "rlnAnglePsi" in cut_candidates(c, 9.0, None).columns
