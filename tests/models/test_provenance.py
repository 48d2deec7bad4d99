"""``cryoshot models``: every shipped model reports how it was made."""

import hashlib
import json

from cryoshot.cli import main
from cryoshot.pretrained import SHIPPED, shipped_model_path
from cryoshot.train.loop import train

from ..fewshot.helpers import tiny_config


def test_every_shipped_model_reports_its_provenance(capsys):
    assert main(["models", "--json"]) == 0
    models = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in models] == list(SHIPPED)
    for m in models:
        path = shipped_model_path(m["name"])
        assert m["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert m["version"] and m["seed"] is not None and m["stages"], m["name"]
        for st in m["stages"]:
            assert "train" in st["argv"] and st["method"] in st["argv"], (m["name"], st["argv"])
        assert m["stages"][-1]["validation"], m["name"]  # the kept model's validation figure
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert all(f"{name}: {SHIPPED[name][0]}" in text for name in SHIPPED) and "command: " in text


def test_a_trained_file_lists_every_stage_with_its_command(tmp_path, capsys):
    first, second = tmp_path / "p.pt", tmp_path / "ce.pt"
    train(tiny_config("protonet", episodes=2), first, progress=False)
    train(tiny_config("protonet-ce", episodes=2, init_from=str(first)), second, progress=False)
    assert main(["models", str(second), "--json"]) == 0
    (m,) = json.loads(capsys.readouterr().out)
    assert [st["method"] for st in m["stages"]] == ["protonet", "protonet-ce"] and m["stages_recorded"]
    assert m["stages"][0]["started_from"] == "p.pt" and m["encoder"] == "cryoshot-tiny"
    assert main(["models", str(tmp_path / "missing.pt")]) != 0
    assert "neither a shipped model" in capsys.readouterr().err
