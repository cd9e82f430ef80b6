#!/usr/bin/env bash
# The main job on the built-in default. Extra arguments go to mtspec.main, e.g.
#   bash scripts/run.sh --config.train.steps=50
source "$(dirname "$0")/venv.sh"
exec .venv/bin/python -m mtspec.main --config=configs/lm.py:small \
  --workdir="${WORKDIR:-runs/lm_small}" "$@"
