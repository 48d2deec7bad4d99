"""``train mae``: pre-training on simulated micrograph episodes, resumable, best kept, provenance."""

import dataclasses

import numpy as np
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


def test_ice_texture_and_the_pickers_preparation_change_only_the_image():
    from cryoshot.train.mae import prepare_like_picker

    plain = PickEpisodeSampler(training_specs(5), size_px=160)
    textured = PickEpisodeSampler(training_specs(5), size_px=160, ice_texture_max=1.5, prepare=prepare_like_picker)
    changed = 0
    for i in range(4):
        a, b = plain.episode(i), textured.episode(i)
        np.testing.assert_array_equal(a.target_xy, b.target_xy)  # every other draw is as without them
        np.testing.assert_array_equal(a.exemplar_xy, b.exemplar_xy)
        changed += not np.allclose(a.image, b.image)
        # prepared like a micrograph: robust standardisation, clipped at ±5, background flattened
        assert np.abs(b.image).max() <= 5 and abs(float(np.median(b.image))) < 0.1
    assert changed == 4


def test_a_run_can_start_from_an_earlier_mae_and_records_it(tmp_path):
    train_mae(_cfg(2), tmp_path / "base.pt", progress=False)
    train_mae(_cfg(2, init_from=str(tmp_path / "base.pt"), ice_texture_max=1.0, flatten=True), tmp_path / "ft.pt",
              progress=False)  # fmt: skip
    _, ck = load_mae(tmp_path / "ft.pt")
    stages = ck["stages"]
    assert len(stages) == 2 and stages[0]["file"]["name"] == "base.pt" and stages[1]["file"] is None
    assert stages[1]["config"]["ice_texture_max"] == 1.0 and stages[1]["config"]["init_from"].endswith("base.pt")
    other = _cfg(2, init_from=str(tmp_path / "base.pt"))
    other.model = dataclasses.replace(TINY, dim=8)
    with pytest.raises(CryoshotError, match="another shape"):
        train_mae(other, tmp_path / "x.pt", progress=False)


def test_train_mae_refuses_bad_simulator_settings_before_any_work(tmp_path, capsys):
    from cryoshot.cli import main

    for bad in ("snr=3", "flatten=x", "ice_texture_max=-1"):
        assert main(["train", "mae", "-o", str(tmp_path / "m.pt"), "--simulator", bad]) != 0
        err = capsys.readouterr().err
        assert ("ice_texture_max" in err or "flatten" in err) and not (tmp_path / "m.pt").exists()
