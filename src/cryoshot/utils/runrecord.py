"""The settings of the verb now running, written as ``run.yaml`` into every output folder.

The command line sets :data:`current_run` (see ``cryoshot.cli_config.record_run``);
``cryoshot.utils.files.atomic_dir`` writes it into a top-level output folder before the
folder is moved into place, so the file is part of the output (and of its manifest).
"""

from __future__ import annotations

import contextvars

RUN_FILE = "run.yaml"
current_run: contextvars.ContextVar[dict | None] = contextvars.ContextVar("current_run", default=None)


def run_yaml(run: dict) -> str:
    """The text of ``run.yaml``: a comment naming the verb, then the settings (``--config`` reads either)."""
    import yaml

    head = f"# cryoshot {run['cryoshot']}: cryoshot {run['command']} --config run.yaml (flags override)\n"
    return head + yaml.safe_dump({"command": run["command"], "settings": run["settings"]}, sort_keys=False)
