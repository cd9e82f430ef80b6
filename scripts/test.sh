#!/usr/bin/env bash
# The test suite (adds the test-only extras: pytest, torch CPU, transformers).
source "$(dirname "$0")/venv.sh" requirements-test.txt
exec .venv/bin/python -m pytest -q "$@" tests
