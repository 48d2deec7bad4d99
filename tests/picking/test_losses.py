"""The self-cross similarity loss against direct double loops (cryoMAE Eqs. 1-5)."""

import numpy as np
import pytest
import torch

from cryoshot.picking.losses import scs_loss, self_cross_similarity


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _loops(fl, fu, pi):
    m, n = len(fl), len(fu)
    s_ll = sum(_cos(fl[i], fl[j]) for i in range(m) for j in range(m))
    s_lu = sum(_cos(fl[i], fu[j]) for i in range(m) for j in range(n))
    s_uu = sum(_cos(fu[i], fu[j]) for i in range(n) for j in range(n))
    s_self = (s_ll + 2 * pi * s_lu + pi**2 * s_uu) / (m + pi * n) ** 2
    s_cross = ((1 - pi) * s_lu + pi * (1 - pi) * s_uu) / ((m + pi * n) * (1 - pi) * n)
    return s_self, s_cross


@pytest.mark.parametrize("pi", [0.0, 0.1, 0.45])
def test_similarities_match_double_loops(pi):
    rng = np.random.default_rng(0)
    fl, fu = rng.normal(size=(5, 7)), rng.normal(size=(9, 7))
    s_self, s_cross = self_cross_similarity(torch.tensor(fl), torch.tensor(fu), pi)
    e_self, e_cross = _loops(fl, fu, pi)
    assert float(s_self) == pytest.approx(e_self, abs=1e-10)
    assert float(s_cross) == pytest.approx(e_cross, abs=1e-10)


def test_unadjusted_is_eqs_1_and_2():
    rng = np.random.default_rng(1)
    fl, fu = rng.normal(size=(4, 6)), rng.normal(size=(8, 6))
    s_self, s_cross = self_cross_similarity(torch.tensor(fl), torch.tensor(fu), 0.0)
    eq1 = np.mean([_cos(a, b) for a in fl for b in fl])
    eq2 = np.mean([_cos(a, b) for a in fl for b in fu])
    assert float(s_self) == pytest.approx(eq1) and float(s_cross) == pytest.approx(eq2)


def test_pu_adjusted_loss_equals_unadjusted_at_pi_zero_and_differs_above():
    rng = np.random.default_rng(2)
    fl, fu = torch.tensor(rng.normal(size=(6, 5))), torch.tensor(rng.normal(size=(10, 5)))
    base = 1 + 0.3 * self_cross_similarity(fl, fu)[1] - 0.7 * self_cross_similarity(fl, fu)[0]
    assert float(scs_loss(fl, fu, alpha=0.3, tau=-10, pi=0.0)) == pytest.approx(float(base))
    assert float(scs_loss(fl, fu, alpha=0.3, tau=-10, pi=0.3)) != pytest.approx(float(base))


def test_tau_is_a_floor_and_the_loss_rewards_separation():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.01]])
    far, near = torch.tensor([[-1.0, 0.0]] * 3), torch.tensor([[1.0, 0.02]] * 3)
    assert float(scs_loss(a, far, alpha=0.5, tau=0.0)) < float(scs_loss(a, near, alpha=0.5, tau=0.0))
    assert float(scs_loss(a, far, alpha=0.5, tau=0.25)) == pytest.approx(0.25)


def test_loss_has_gradients():
    fl = torch.randn(3, 4, requires_grad=True)
    scs_loss(fl, torch.randn(5, 4), pi=0.1).backward()
    assert fl.grad is not None and torch.isfinite(fl.grad).all() and fl.grad.abs().sum() > 0


def test_stage1_on_exemplars_alone_trains_the_reconstruction_only():
    """No unlabelled windows (paper Fig. 7a): stage 1 still runs, on the MSE of the exemplar windows alone."""
    from cryoshot.models.mae2d import MAEConfig, PickerMAE
    from cryoshot.picking.stage1 import Stage1Config, fine_tune, random_windows

    assert random_windows([np.zeros((40, 40), np.float32)], 0, 12, np.random.default_rng(0)).shape == (0, 1, 12, 12)
    torch.manual_seed(0)
    net = PickerMAE(MAEConfig(dim=16, depth=1, heads=2, decoder_dim=8, decoder_depth=1))
    before = [p.detach().clone() for p in net.parameters()]
    img = np.random.default_rng(1).normal(size=(96, 96)).astype(np.float32)
    out = fine_tune(net, [img], [(0, 40.0, 40.0), (0, 60.0, 30.0)], Stage1Config(steps=3, n_unlabeled=0, n_shifted=0),
                    pi=0.2, progress=False)  # fmt: skip
    assert out["steps"] == 3 and out["scs"] == 0.0 and out["mse"] > 0
    assert any((a != b).any() for a, b in zip(before, net.parameters(), strict=True))


def test_stage1_runs_every_step_unless_a_time_budget_is_set(monkeypatch):
    """By default the steps alone end stage 1 (a busy machine must not change the picks); a budget, when set,
    stops it at the first step past it."""
    from cryoshot.models.mae2d import MAEConfig, PickerMAE
    from cryoshot.picking import stage1
    from cryoshot.picking.stage1 import Stage1Config, fine_tune

    clock = iter(np.arange(0.0, 1e4, 100.0))  # every reading of the clock is 100 s after the last: a slow machine
    monkeypatch.setattr(stage1.time, "perf_counter", lambda: float(next(clock)))
    img = np.random.default_rng(1).normal(size=(96, 96)).astype(np.float32)
    ex = [(0, 40.0, 40.0), (0, 60.0, 30.0)]
    for budget, steps in ((None, 4), (150.0, 2)):
        torch.manual_seed(0)
        net = PickerMAE(MAEConfig(dim=16, depth=1, heads=2, decoder_dim=8, decoder_depth=1))
        cfg = Stage1Config(steps=4, n_unlabeled=0, n_shifted=0, time_budget_s=budget)
        assert fine_tune(net, [img], ex, cfg, pi=0.2, progress=False)["steps"] == steps
    assert Stage1Config().time_budget_s is None
