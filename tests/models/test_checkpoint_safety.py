"""Loading a model file never runs code from it."""

import os
import pickle

import pytest
import torch

from cryoshot.cli import main
from cryoshot.errors import CryoshotError
from cryoshot.models.checkpoint import FORMAT, load_checkpoint


class _Payload:
    """Unpickling this calls os.system(...) (the classic pickle exploit)."""

    def __init__(self, cmd: str):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def _evil(path, marker):
    data = {"format": FORMAT, "version": "0.1.0", "method": "protonet", "payload": _Payload(f"touch {marker}")}
    torch.save(data, path)


def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path):
    marker, evil = tmp_path / "pwned", tmp_path / "evil.pt"
    _evil(evil, marker)
    with pytest.raises(CryoshotError, match="refusing to load"):
        load_checkpoint(evil)
    assert not marker.exists()


def test_plain_pickle_file_is_refused(tmp_path):
    marker, evil = tmp_path / "pwned", tmp_path / "evil.pkl"
    with open(evil, "wb") as f:
        pickle.dump(_Payload(f"touch {marker}"), f)
    with pytest.raises(CryoshotError):
        load_checkpoint(evil)
    assert not marker.exists()


@pytest.mark.parametrize("verb", ["classify", "evaluate", "train"])
def test_cli_never_runs_a_crafted_model(tmp_path, capsys, verb):
    marker, evil = tmp_path / "pwned", tmp_path / "evil.pt"
    _evil(evil, marker)
    star = tmp_path / "x.star"
    star.write_text("data_\nloop_\n_rlnImageName\na.mrc\n")
    args = {
        "classify": ["classify", "--support", str(star), "--query", str(star), "-o", str(tmp_path / "p.star"),
                     "--model", str(evil)],
        "evaluate": ["evaluate", str(star), "--model", str(evil)],
        "train": ["train", "protonet-ce", "-o", str(tmp_path / "m.pt"), "--init-from", str(evil)],
    }[verb]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("cryoshot: error:") and "Traceback" not in err
    assert not marker.exists()


def test_checkpoint_with_wrong_config_is_a_clear_error(tmp_path):
    from cryoshot.models.loading import load_model

    bad = tmp_path / "bad.pt"
    torch.save({"format": FORMAT, "version": "0.1.0", "method": "protonet", "seed": 0,
                "config": {"no_such_field": 1}, "state_dict": {}}, bad)  # fmt: skip
    with pytest.raises(CryoshotError, match="cannot rebuild"):
        load_model(bad)
