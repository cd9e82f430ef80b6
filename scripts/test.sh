#!/usr/bin/env bash
# The test suite (adds the test-only extras: pytest, torch CPU, transformers), on two workers
# (pytest-xdist; the groups and their order are set in tests/conftest.py).
EXTRA_REQUIREMENTS=requirements-test.txt source "$(dirname "$0")/venv.sh"
exec .venv/bin/python -m pytest -q -n 2 --no-loadscope-reorder "$@" tests
