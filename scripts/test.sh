#!/usr/bin/env bash
# The test suite (adds the test-only extras: pytest, torch CPU, transformers).
EXTRA_REQUIREMENTS=requirements-test.txt source "$(dirname "$0")/venv.sh"
exec .venv/bin/python -m pytest -q "$@" tests
