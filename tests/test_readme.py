"""The README's figures come from the code: the demo transcript and the shipped model's size."""

import re
from pathlib import Path

import pytest

from cryoshot.pretrained import resolve_model

ROOT = Path(__file__).resolve().parents[1]


def _stated_mb(text: str) -> float:
    m = re.search(r"([0-9.]+) MB", text)
    assert m, "no model size in the text"
    return float(m.group(1))


def test_stated_model_size_is_the_files():
    size_mb = resolve_model("default").stat().st_size / 1e6
    for doc in (ROOT / "README.md", ROOT / "src/cryoshot/pretrained/README.md"):
        line = next(ln for ln in doc.read_text().splitlines() if "MB" in ln)
        assert _stated_mb(line) == pytest.approx(size_mb, abs=0.05), f"{doc}: {line}"


def test_demo_transcript_in_the_readme_is_what_the_demo_prints(tmp_path, capsys):
    from cryoshot.demo import run_demo

    run_demo(tmp_path / "demo")
    out = capsys.readouterr().out
    rows = [
        ln
        for ln in out.splitlines()
        if ln.startswith(("ProtoNet-CE", "ProtoNet3D", "fine-tune", "picking ", "2D classification"))
    ]
    readme = (ROOT / "README.md").read_text()
    assert len(rows) == 5
    for row in rows:
        assert row in readme, f"README's demo transcript is out of date; the demo prints:\n{row}"
