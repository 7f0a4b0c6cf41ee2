#!/usr/bin/env bash
# The whole demo on a fresh machine, in one command: makes .venv, installs torch==2.13.0 (CPU)
# FIRST so pip never resolves a CUDA build, then the project with the extras the demo needs,
# then runs `vqspeech demo demo-out`: synthesise a corpus, train, encode, decode, convert,
# evaluate, and write demo-out/report.html. Running it again reuses the venv and whatever the
# demo already finished; Ctrl-C during training saves a checkpoint and a rerun continues it.
# Extra arguments go to `vqspeech demo` (e.g. `bash scripts/demo.sh --steps 400`).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
# (the grep hides this machine's pip-config noise; pip's own exit status is kept)
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "^WARNING: Location" >&2); }
echo "== installing into .venv (torch 2.13.0 CPU, then vqspeech[synth,train,eval])" >&2
pip install torch==2.13.0
pip install -e ".[synth,train,eval]"
exec .venv/bin/vqspeech demo demo-out "$@"
