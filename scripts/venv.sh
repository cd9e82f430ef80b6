# Sourced by run.sh and test.sh: creates or reuses .venv and installs the requirements
# (plus the files named in EXTRA_REQUIREMENTS, space-separated).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
EXTRA=${EXTRA_REQUIREMENTS:-}
STAMP=.venv/.installed-$(cat requirements.txt $EXTRA | sha256sum | cut -c1-16)
if [ ! -f "$STAMP" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt \
    $(for f in $EXTRA; do echo "-r $f"; done)
  touch "$STAMP"
fi
# Huge pages for XLA:CPU scratch memory (see mtspec/hugepages.py); set here so tests get it too.
export GLIBC_TUNABLES="${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}glibc.malloc.hugetlb=1"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
