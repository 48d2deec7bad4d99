"""Distillation of the 4-rotation embedding into one pass (``train ... --distill-from``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryoshot.data.synthetic import FLIPS, VolumePool
from cryoshot.errors import CryoshotError
from cryoshot.models.checkpoint import load_checkpoint
from cryoshot.models.embedding import embed_volumes
from cryoshot.models.loading import load_model
from cryoshot.train.loop import train

from .helpers import tiny_config


def _rotation_mean(model, x):
    with torch.no_grad():
        return torch.stack([model.embed(torch.flip(x, FLIPS[k]) if FLIPS[k] else x) for k in range(len(FLIPS))]).mean(0)


def test_student_approaches_the_teachers_rotation_average(tmp_path):
    teacher_path = tmp_path / "teacher.pt"
    train(tiny_config("protonet", episodes=4), teacher_path, progress=False)
    student_path = tmp_path / "student.pt"
    cfg = tiny_config("protonet", episodes=40, val_every=20, distill_from=str(teacher_path), distill_batch=16)
    train(cfg, student_path, progress=False)
    teacher, _ = load_model(teacher_path)
    student, ck = load_model(student_path)
    # provenance: the teacher's stage (with its file's hash), then the distillation
    assert [s["method"] for s in ck["stages"]] == ["protonet", "protonet"]
    assert len(ck["stages"][0]["file"]["sha256"]) == 64 and ck["stages"][1]["config"]["distill_from"] == str(
        teacher_path
    )
    assert student.default_rotations == 1 and teacher.default_rotations is None
    # the student's one pass is closer to the teacher's 4-rotation mean than the teacher's own one pass
    b = cfg.pool.box_px
    x = VolumePool(cfg.pool, progress=False).volumes[:, :2].reshape(-1, b, b, b).float()
    target = _rotation_mean(teacher, x)
    with torch.no_grad():
        err_teacher = (teacher.embed(x) - target).pow(2).sum(1).mean()
        err_student = (student.embed(x) - target).pow(2).sum(1).mean()
    assert err_student < 0.7 * err_teacher
    # BatchNorm statistics are the teacher's (the student trains in eval mode)
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for k in t_state:
        if "running_" in k:
            torch.testing.assert_close(s_state[k], t_state[k])
    # inference uses one pass by default: the same as asking for --rotations 1
    v = x[:3].numpy()
    np.testing.assert_allclose(embed_volumes(student, v, 10.0, progress=False, precision="fp32", contrast="bright"),
                               embed_volumes(student, v, 10.0, progress=False, precision="fp32", contrast="bright",
                                             rotations=1))  # fmt: skip
    assert load_checkpoint(student_path)["config"]["distill_from"] == str(teacher_path)


def test_distilling_a_model_of_other_settings_is_refused(tmp_path):
    teacher_path = tmp_path / "teacher.pt"
    train(tiny_config("protonet", episodes=2), teacher_path, progress=False)
    with pytest.raises(CryoshotError, match="other settings"):
        train(tiny_config("protonet", episodes=2, encoder="cryoshot-small", distill_from=str(teacher_path)),
              tmp_path / "s.pt", progress=False)  # fmt: skip
    with pytest.raises(CryoshotError, match="not both"):
        train(tiny_config("protonet-ce", episodes=2, distill_from=str(teacher_path), init_from=str(teacher_path)),
              tmp_path / "s2.pt", progress=False)  # fmt: skip


def test_a_resumed_distillation_equals_an_uninterrupted_one(tmp_path):
    teacher_path = tmp_path / "teacher.pt"
    train(tiny_config("protonet", episodes=2), teacher_path, progress=False)
    kw = dict(val_every=10, distill_from=str(teacher_path), distill_batch=8)
    train(tiny_config("protonet", episodes=20, **kw), tmp_path / "whole.pt", progress=False)
    train(tiny_config("protonet", episodes=10, **kw), tmp_path / "part.pt", progress=False)
    # the targets come from the teacher's file, not from the half-trained student being resumed
    train(tiny_config("protonet", episodes=20, **kw), tmp_path / "part.pt", resume=True, progress=False)
    whole = load_checkpoint(tmp_path / "whole.pt.last")["state_dict"]
    part = load_checkpoint(tmp_path / "part.pt.last")["state_dict"]
    for k in whole:
        torch.testing.assert_close(part[k], whole[k])
