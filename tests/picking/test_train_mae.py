"""``train mae``: pre-training on simulated micrograph episodes, resumable, best kept, provenance."""

import pytest
import torch

from cryoshot.data.micrograph_episodes import PickEpisodeSampler, training_specs
from cryoshot.errors import CryoshotError
from cryoshot.models.mae2d import MAEConfig, load_mae
from cryoshot.simulate.splits import NOVEL_STRUCTURES
from cryoshot.train.mae import MAETrainConfig, train_mae

TINY = MAEConfig(dim=16, depth=1, heads=2, decoder_dim=8, decoder_depth=1)


def _cfg(steps: int, **kw) -> MAETrainConfig:
    return MAETrainConfig(steps=steps, n_procedural=3, size_px=128, val_every=2, val_episodes=1, n_unlabeled=8,
                          n_shifted=4, model=TINY, **kw)  # fmt: skip


def test_training_pool_never_holds_a_novel_structure():
    specs = PickEpisodeSampler(training_specs(5)).specs
    assert not set(specs) & set(NOVEL_STRUCTURES)
    assert len(specs) == 5 + 8


def test_episodes_are_seeded_and_hold_the_target():
    s = PickEpisodeSampler(training_specs(5), size_px=160)
    a, b = s.episode(3), s.episode(3)
    assert (a.image == b.image).all() and len(a.target_xy) >= 1
    assert len(a.exemplar_xy) == min(15, len(a.target_xy))
    assert 0.7 * 16 <= a.particle_px <= 1.5 * 16


def test_killed_run_resumes_to_the_same_model(tmp_path):
    straight = train_mae(_cfg(4), tmp_path / "a.pt", progress=False)
    train_mae(_cfg(2), tmp_path / "b.pt", progress=False)
    resumed = train_mae(_cfg(4), tmp_path / "b.pt", resume=True, progress=False)
    assert resumed["episodes"] == straight["episodes"] == 4
    last_a = torch.load(tmp_path / "a.pt.last", weights_only=True)["state_dict"]
    last_b = torch.load(tmp_path / "b.pt.last", weights_only=True)["state_dict"]
    for k in last_a:
        torch.testing.assert_close(last_a[k], last_b[k])
    model, ck = load_mae(tmp_path / "a.pt")
    assert ck["method"] == "mae" and ck["config"]["model"]["dim"] == 16 and ck["stages"][0]["method"] == "mae"
    assert [h["episode"] for h in ck["history"]][-1] in (2, 4)
    with pytest.raises(CryoshotError, match="lr"):
        train_mae(_cfg(6, lr=1e-2), tmp_path / "b.pt", resume=True, progress=False)
    with pytest.raises(CryoshotError, match="exists"):
        train_mae(_cfg(2), tmp_path / "a.pt", progress=False)
