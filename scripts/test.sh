#!/usr/bin/env bash
# The test suite, on two pytest-xdist workers (groups and order: tests/conftest.py).
# Installs the package with its test extras first. Extra arguments go to pytest:
#   bash scripts/test.sh -m fast     # the fast tier, to run after each edit
#   bash scripts/test.sh -k lanes    # one area
EXTRAS=test source "$(dirname "$0")/venv.sh"
.venv/bin/python scripts/check_imports.py
.venv/bin/ruff format --check --quiet mtspec configs tests scripts
.venv/bin/ruff check --quiet mtspec configs tests scripts
exec .venv/bin/python -m pytest -q -n 2 --no-loadscope-reorder "$@"
