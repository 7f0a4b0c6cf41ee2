#!/usr/bin/env bash
# Run the test suite on a fresh machine: makes .venv, installs torch==2.13.0 (CPU) FIRST so
# pip never resolves a CUDA build, then the project with its extras, then lints and tests.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k quantizer`).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
# (the grep hides this machine's pip-config noise; pip's own exit status is kept)
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "^WARNING: Location" >&2); }
pip install torch==2.13.0
pip install -e ".[dev,synth,train,eval]"
.venv/bin/python -c "import torch, vqspeech_cli.main" # fail fast if the install did not work
echo "== ruff"; .venv/bin/ruff check .
echo "== mypy"; .venv/bin/mypy
echo "== pytest"; .venv/bin/pytest -q "$@"
