#!/usr/bin/env bash
# Topaz 0.3.20 in its own virtual environment (a benchmark tool, not a cryoshot dependency).
# The CPU torch 2.13.0 wheel on disk, Topaz without its declared dependencies, its light ones,
# and benchmarks/topaz_guard (rotate/hflip/vflip) in place of torchvision.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=runs/topaz-venv
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q torch==2.13.0
"$VENV/bin/pip" install -q --no-deps topaz-em==0.3.20
"$VENV/bin/pip" install -q numpy pandas scikit-learn scipy pillow future psutil tqdm h5py
SITE=$("$VENV/bin/python" -c 'import site; print(site.getsitepackages()[0])')
cp -r benchmarks/topaz_guard/torchvision "$SITE/"
"$VENV/bin/topaz" --help > /dev/null && echo "topaz ready: $VENV/bin/topaz"
