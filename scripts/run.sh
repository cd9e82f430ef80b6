#!/usr/bin/env bash
# The main job: the toy-world MSM experiment (configs/cheese_toy.py). Extra arguments go to
# mtspec.toy, e.g.  bash scripts/run.sh --config=configs/cheese_toy.py:quick
source "$(dirname "$0")/venv.sh"
exec .venv/bin/python -m mtspec.toy --config=configs/cheese_toy.py:default \
  --workdir="${WORKDIR:-runs/cheese_toy}" "$@"
