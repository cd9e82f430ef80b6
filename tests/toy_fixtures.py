"""One quick toy experiment per world per test session, shared by the toy and notebook tests.

`quick_run(variant)` runs `python -m mtspec.toy --config=configs/cheese_toy.py:<variant>` in a
fresh process (once per session and variant) and returns (workdir, stdout, seconds).
"""
import atexit
import os
import shutil
import tempfile
import time

from conftest import run_module

_RUNS = {}


def quick_run(variant: str = 'quick'):
  if variant not in _RUNS:
    root = tempfile.mkdtemp(prefix='mtspec_toy_')
    atexit.register(shutil.rmtree, root, ignore_errors=True)  # 35 MB a run; CI disks fill up
    workdir = os.path.join(root, variant.replace(',', '_'))
    t = time.time()
    proc = run_module(['-m', 'mtspec.toy', f'--config=configs/cheese_toy.py:{variant}',
                       f'--workdir={workdir}'], timeout=600)
    _RUNS[variant] = (workdir, proc.stdout, time.time() - t)
  return _RUNS[variant]
