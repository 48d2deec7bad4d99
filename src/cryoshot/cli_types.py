"""Option value parsers for the command line: each names what is allowed when a value is not.

Typer calls a parser with the text the user typed; a ``typer.BadParameter`` becomes the
one-line ``cryoshot: error: Invalid value for '--opt': ...`` of :func:`cryoshot.cli.main`.
Integers use typer's own ``min``/``max``; floats go through :func:`real` because a range
check alone lets ``nan`` through.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import typer

SEED_MAX = 2**32 - 1  # numpy and torch seeds are unsigned 32-bit here


def real(
    lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False
) -> Callable[[str], float]:
    """Parser of a finite float in [lo, hi] (open ends with ``lo_open`` / ``hi_open``)."""

    def allowed() -> str:
        parts = []
        if lo is not None:
            parts.append(f"{'>' if lo_open else '>='} {lo:g}")
        if hi is not None:
            parts.append(f"{'<' if hi_open else '<='} {hi:g}")
        return "a finite number" + (f" {' and '.join(parts)}" if parts else "")

    def parse(text: str | float) -> float:
        if isinstance(text, float):  # the default, already a float
            value = text
        else:
            try:
                value = float(str(text).strip())
            except ValueError:
                raise typer.BadParameter(f"'{text}' is not a number; expected {allowed()}") from None
        bad = not math.isfinite(value)
        bad |= lo is not None and (value <= lo if lo_open else value < lo)
        bad |= hi is not None and (value >= hi if hi_open else value > hi)
        if bad:
            raise typer.BadParameter(f"got {text}; expected {allowed()}")
        return value

    parse.__name__ = "float"
    return parse


def choice(options: Sequence[str]) -> Callable[[str], str]:
    """Parser of one of ``options`` (case-sensitive)."""

    def parse(text: str) -> str:
        if text not in options:
            raise typer.BadParameter(f"got '{text}'; choose one of: {', '.join(options)}")
        return text

    parse.__name__ = "text"
    return parse


def positive_list(text: str) -> str:
    """Check '0.1,0.05' (comma-separated, every value finite and > 0); return the text."""
    parse = real(0, lo_open=True)
    values = [parse(v) for v in str(text).split(",") if v.strip()]
    if not values:
        raise typer.BadParameter(f"got '{text}'; expected comma-separated positive numbers, e.g. 0.1,0.05")
    return ",".join(str(v) for v in values)


def key_values(text: str) -> str:
    """Check 'a=1,b.c=x' (comma-separated KEY=VALUE pairs); return the text."""
    pairs = [p for p in str(text).split(",") if p.strip()]
    if not all("=" in p and p.split("=", 1)[0].strip() for p in pairs):
        raise typer.BadParameter(f"got '{text}'; expected KEY=VALUE pairs separated by commas, e.g. max_shift_px=5")
    return ",".join(p.strip() for p in pairs)


def parse_key_values(text: str | None) -> dict[str, str]:
    """'a=1,b=x' -> {'a': '1', 'b': 'x'}."""
    return dict((k.strip(), v.strip()) for k, v in (p.split("=", 1) for p in (text or "").split(",") if p.strip()))


def k_choice(text: str) -> str:
    """Parser of ``--k``: 'auto' or a whole number of clusters >= 2; returns the text."""
    t = str(text).strip().lower()
    if t == "auto":
        return t
    if not (t.isascii() and t.isdigit()):
        raise typer.BadParameter(f"got '{text}'; use auto or a whole number of clusters (at least 2)")
    if int(t) < 2:
        raise typer.BadParameter(f"got {int(t)}; a clustering needs at least 2 clusters (or use auto)")
    if int(t) > 100_000:
        raise typer.BadParameter(f"got {t}; at most 100000 clusters")
    return t
