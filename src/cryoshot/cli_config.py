"""``--config run.yaml`` for every verb, and the resolved settings written beside every output.

A run file is a YAML mapping from a verb's option names (``per_class`` or ``per-class``) to
values. Its values go through the same parsers as the flags, so a bad value is refused
naming the option; a key the verb does not have is refused naming the key; flags given on
the command line override the file. Every folder a verb writes gets ``run.yaml``: the verb
and all its settings as resolved (defaults included), which ``--config`` takes back, so a
run can be repeated or varied (``cryoshot VERB --config OUT/run.yaml -o OTHER``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryoshot.errors import CryoshotError
from cryoshot.utils.runrecord import current_run


def _find_command(group, argv: list[str]):
    """(click command, number of leading argv words that name it) for ``argv``; (None, 0) if none."""
    cmd, used = group, 0
    while hasattr(cmd, "commands") and used < len(argv) and argv[used] in cmd.commands:
        cmd = cmd.commands[argv[used]]
        used += 1
    return (cmd, used) if cmd is not group else (None, 0)


def _pop_config(argv: list[str]) -> tuple[list[str], str | None]:
    out, path, k = [], None, 0
    while k < len(argv):
        a = argv[k]
        if a == "--config":
            if k + 1 >= len(argv):
                raise CryoshotError("--config needs a file: --config run.yaml")
            path, k = argv[k + 1], k + 2
            continue
        if a.startswith("--config="):
            path = a.split("=", 1)[1]
        else:
            out.append(a)
        k += 1
    return out, path


def _load(path: str) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise CryoshotError(f"config file {p} {'is a folder' if p.is_dir() else 'does not exist'}; give a YAML file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = " ".join(str(exc).split())[:200]
        raise CryoshotError(f"cannot parse config file {p}: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not isinstance(data.get("settings", {}), dict):
        raise CryoshotError(f"config file {p} must hold a mapping of option: value (see cryoshot's run.yaml files)")
    return {str(k): v for k, v in data.items()}


def _given(argv: list[str], params) -> tuple[set[str], int]:
    """Names of the options present in ``argv`` and the number of positional words."""
    by_opt = {o: p for p in params if p.param_type_name == "option" for o in p.opts}
    names, positional, k = set(), 0, 0
    while k < len(argv):
        a = argv[k]
        if a.startswith("-") and a != "-":
            opt = a.split("=", 1)[0]
            p = by_opt.get(opt)
            if p is not None:
                names.add(p.name)
                if not p.is_flag and "=" not in a:
                    k += 1
        else:
            positional += 1
        k += 1
    return names, positional


def _tokens(param, value) -> list[str]:
    if param.param_type_name == "option" and param.is_flag:
        if not isinstance(value, bool):
            raise CryoshotError(f"config key '{param.name}' is a switch: give true or false, got {value!r}")
        return [param.opts[0]] if value else []
    if isinstance(value, (list, tuple)):
        if param.param_type_name == "argument" and getattr(param, "nargs", 1) == -1:
            return [str(v) for v in value]  # a list positional (pick's micrographs): one token each
        value = ",".join(str(v) for v in value)
    if isinstance(value, bool) or isinstance(value, dict):
        raise CryoshotError(f"config key '{param.name}': expected a single value, got {value!r}")
    if value is None:
        return []
    text = str(value)
    return [text] if param.param_type_name == "argument" else [param.opts[0], text]


def apply_config(group, argv: list[str]) -> list[str]:
    """``argv`` with the values of ``--config FILE`` added for every option not given as a flag.

    Raises
    ------
    CryoshotError
        Missing or unparsable file, a key the verb does not have, or a value of the wrong shape.
        (Range and choice errors come from the flags' own parsers when the arguments are parsed.)
    """
    argv, path = _pop_config(argv)
    if path is None:
        return argv
    cmd, used = _find_command(group, argv)
    if cmd is None or hasattr(cmd, "commands"):
        raise CryoshotError("--config goes after a verb, e.g. cryoshot simulate subtomograms --config run.yaml")
    data = _load(path)
    verb = " ".join(argv[:used])
    command = data.pop("command", None)
    if command is not None and str(command) != verb:
        raise CryoshotError(f"config file {path} is for cryoshot {command}, not cryoshot {verb}")
    if "settings" in data:  # a run.yaml written by cryoshot
        data = {str(k): v for k, v in data["settings"].items()}
    params = {p.name: p for p in cmd.params if p.name not in ("help",)}
    for p in list(params.values()):  # the flag's own name works too (json for --json)
        for o in getattr(p, "opts", []):
            if o.startswith("--"):
                params.setdefault(o[2:].replace("-", "_"), p)
    given, n_positional = _given(argv[used:], cmd.params)
    positional_params = [p for p in cmd.params if p.param_type_name == "argument"]
    extra_options: list[str] = []
    extra_positional: dict[int, list[str]] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in params:
            raise CryoshotError(
                f"config file {path}: unknown key '{key}' for cryoshot {verb}; allowed: {', '.join(sorted(params))}"
            )
        p = params[name]
        if p.param_type_name == "argument":
            idx = positional_params.index(p)
            if idx >= n_positional:  # not given on the command line
                extra_positional[idx] = _tokens(p, value)
        elif p.name not in given:
            extra_options += _tokens(p, value)
    missing = [i for i in range(n_positional, len(positional_params)) if i not in extra_positional]
    if extra_positional and missing and min(missing) < max(extra_positional):
        raise CryoshotError(f"config file {path} gives a later positional argument without an earlier one")
    positional_tokens = [t for i in sorted(extra_positional) for t in extra_positional[i]]
    return argv + extra_options + (["--", *positional_tokens] if positional_tokens else [])


def record_run(ctx) -> None:
    """Remember the running verb's resolved settings (``ctx``: the typer/click context)."""
    from cryoshot import __version__

    # --force is left out: replaying a run file must never replace an output unasked
    def plain(v):
        if isinstance(v, Path):
            return str(v)
        return [plain(x) for x in v] if isinstance(v, (list, tuple)) else v

    settings = {k: plain(v) for k, v in ctx.params.items() if k != "force"}
    current_run.set({"command": ctx.command_path.split(" ", 1)[-1], "cryoshot": __version__, "settings": settings})
