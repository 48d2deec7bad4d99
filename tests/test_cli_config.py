"""--config run.yaml for every verb; run.yaml written into every output folder and taken back."""

import pytest
import torch
import yaml

from cryoshot.cli import main
from cryoshot.io.star import read_star_table
from tests.fewshot.helpers import tiny_checkpoint, write_toy_set


def _sim(tmp_path, *extra):
    return ["simulate", "subtomograms", "-s", "1bxn,3cf3", "--box", "16", "--per-class", "2", *extra]


def test_run_yaml_is_written_and_replays_the_same_data(tmp_path, capsys):
    assert main([*_sim(tmp_path), "--snr", "0.2", "-o", str(tmp_path / "a")]) == 0
    run = yaml.safe_load((tmp_path / "a" / "run.yaml").read_text())
    assert run["command"] == "simulate subtomograms" and run["settings"]["snr"] == 0.2
    assert "force" not in run["settings"]  # replaying never replaces an output unasked
    assert main(["simulate", "subtomograms", "--config", str(tmp_path / "a" / "run.yaml"), "-o",
                 str(tmp_path / "b")]) == 0  # fmt: skip
    a, b = read_star_table(tmp_path / "a" / "particles.star"), read_star_table(tmp_path / "b" / "particles.star")
    assert a.equals(b)
    assert main(["simulate", "subtomograms", "--config", str(tmp_path / "a" / "run.yaml"), "--seed", "5", "-o",
                 str(tmp_path / "c")]) == 0  # fmt: skip  # a flag overrides the file
    c = read_star_table(tmp_path / "c" / "particles.star")
    assert not a.equals(c) and yaml.safe_load((tmp_path / "c" / "run.yaml").read_text())["settings"]["seed"] == 5


def test_a_hand_written_config_with_dashes_and_lists(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("structures: [1bxn, 3cf3]\nper-class: 3\nbox: 16\nno_ctf: true\n")
    assert main(["simulate", "subtomograms", "--config", str(cfg), "-o", str(tmp_path / "o")]) == 0
    table = read_star_table(tmp_path / "o" / "particles.star")
    assert len(table) == 6
    assert yaml.safe_load((tmp_path / "o" / "run.yaml").read_text())["settings"]["no_ctf"] is True


@pytest.mark.parametrize(
    "text,message",
    [
        ("per_clas: 2\n", "unknown key 'per_clas'"),
        ("snr: -1\n", "'--snr'"),
        ("angpix: abc\n", "'--angpix'"),
        ("box: abc\n", None),  # --box is on the command line: the flag wins, the file's value is not used
        ("no_ctf: 3\n", "'no_ctf' is a switch"),
        ("- a\n- b\n", "must hold a mapping"),
        ("command: train\nsettings: {}\n", "is for cryoshot train"),
        ("a: [unclosed\n", "cannot parse"),
    ],
)
def test_bad_config_files_are_clear_errors(tmp_path, capsys, text, message):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(text)
    if message is None:
        assert main([*_sim(tmp_path), "--config", str(cfg), "-o", str(tmp_path / "o")]) == 0
        return
    assert main([*_sim(tmp_path), "--config", str(cfg), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cryoshot: error:") and message in err, err
    assert not (tmp_path / "o").exists()
    assert main([*_sim(tmp_path), "--config", str(tmp_path / "missing.yaml"), "-o", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_positional_arguments_and_checkpoints(tmp_path, capsys):
    star = write_toy_set(tmp_path / "set", [0, 1, 2], per_class=4)
    model = tiny_checkpoint(tmp_path / "tiny.pt")
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(f"data: {star}\nmodel: {model}\nway: 3\nshot: 1\nquery: 2\nepisodes: 3\njson: true\n")
    assert main(["evaluate", "--config", str(cfg)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "3-way 1-shot" in out and out.strip().splitlines()[-1].startswith("{")
    from cryoshot.models.checkpoint import save_checkpoint
    from cryoshot.utils.runrecord import current_run

    token = current_run.set({"command": "train", "cryoshot": "x", "settings": {"lr": 0.1}})
    try:
        save_checkpoint(tmp_path / "m.pt", {"state_dict": {}, "config": {}, "method": "protonet", "seed": 0})
    finally:
        current_run.reset(token)
    assert torch.load(tmp_path / "m.pt", weights_only=True)["run"]["settings"]["lr"] == 0.1


def test_a_list_positional_replays_as_separate_arguments(tmp_path):
    """pick's micrographs come back from run.yaml as one argument each, not joined by commas."""
    import typer

    from cryoshot.cli import app
    from cryoshot.cli_config import apply_config

    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"command": "pick", "settings": {"micrographs": ["a.mrc", "b.mrc"],
                                                                     "diameter": 160.0}}))  # fmt: skip
    argv = apply_config(typer.main.get_command(app), ["pick", "--config", str(cfg), "-o", "out"])
    assert argv[argv.index("--") + 1 :] == ["a.mrc", "b.mrc"]
    assert argv[argv.index("--diameter") + 1] == "160.0"


def test_classify_writes_its_run_record_beside_its_one_file_and_replays(tmp_path):
    """classify's output is one STAR file, so its run.yaml is OUTPUT.run.yaml beside it; --config takes it back."""
    d = tmp_path / "d"
    assert main(["simulate", "subtomograms", "-s", "1bxn,3cf3", "--box", "24", "--angpix", "16", "--per-class", "6",
                 "--snr", "1", "-o", str(d)]) == 0  # fmt: skip
    t = read_star_table(d / "particles.star")
    from cryoshot.io.star import write_star

    write_star(d / "sup.star", t.groupby("rlnClassNumber").head(3))
    argv = ["classify", "--support", str(d / "sup.star"), "--query", str(d / "particles.star"), "--no-unknown"]
    assert main([*argv, "-o", str(tmp_path / "pred.star")]) == 0
    record = tmp_path / "pred.run.yaml"
    run = yaml.safe_load(record.read_text())
    assert run["command"] == "classify" and run["settings"]["no_unknown"] is True
    assert main([*argv, "-o", str(tmp_path / "pred.star")]) != 0  # both exist: refused without --force
    assert main(["classify", "--config", str(record), "-o", str(tmp_path / "again.star")]) == 0
    a, b = read_star_table(tmp_path / "pred.star"), read_star_table(tmp_path / "again.star")
    assert list(a["cryoshotPredictedClass"]) == list(b["cryoshotPredictedClass"])
    assert (tmp_path / "again.run.yaml").exists()
