"""Faults on long runs: checkpoint folders that refuse writes. Real runs in subprocesses (a
hang meets their timeout).

Refused writes are real: the tests run as root, where chmod stops nothing, so a folder is
made immutable (chattr +i) or the checkpoint folder's path is taken by a regular file.
"""

import os
import subprocess
import sys
import time

import pytest
from conftest import ROOT, run_module

from mtspec import checkpoint
from mtspec.errors import CheckpointWriteError

CMD = ['-m', 'mtspec.main', '--config=configs/lm.py:tiny']


def _main(workdir, *flags, timeout=120):
  return run_module([*CMD, f'--workdir={workdir}', *flags], timeout=timeout, check=False)


def _last_line(text: str) -> str:
  return text.strip().splitlines()[-1]


def _immutable(path, on: bool) -> bool:
  """chattr +i / -i; False if path is gone. Skips the test where chattr cannot work."""
  proc = subprocess.run(['chattr', '+i' if on else '-i', str(path)], capture_output=True)
  if proc.returncode and on and os.path.exists(path):
    pytest.skip(f'chattr +i is not available here: {proc.stderr.decode().strip()}')
  return proc.returncode == 0


def test_a_checkpoint_folder_that_is_not_writable_stops_the_run_before_it_starts(tmp_path):
  (tmp_path / 'checkpoints').write_text('')  # its path taken by a file
  proc = _main(tmp_path, timeout=60)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert _last_line(proc.stderr).startswith(
    f'error: {tmp_path}/checkpoints is not a writable folder'
  )
  assert 'Traceback' not in proc.stderr
  assert not (tmp_path / 'data').exists()  # before data preparation


def test_a_save_refused_mid_run_ends_the_run_at_once_naming_the_folder(tmp_path):
  ckpts, out, err = tmp_path / 'checkpoints', tmp_path / 'out.txt', tmp_path / 'err.txt'
  with open(out, 'w') as stdout, open(err, 'w') as stderr:
    proc = subprocess.Popen(
      [sys.executable, *CMD, f'--workdir={tmp_path}', '--config.phases.train.steps=60'],
      cwd=ROOT,
      env={**os.environ, 'PYTHONPATH': ROOT},
      stdout=stdout,
      stderr=stderr,
    )
  try:
    deadline = time.time() + 120
    # tb/ appears after the up-front checks, before compilation and the first save (step 20)
    while not (tmp_path / 'tb').exists() and proc.poll() is None and time.time() < deadline:
      time.sleep(0.005)
    assert proc.poll() is None, err.read_text()[-2000:]
    _immutable(ckpts, True)
    denied = time.time()
    rc = proc.wait(timeout=60)
    ended_after = time.time() - denied
  finally:
    if proc.poll() is None:
      proc.kill()
    _immutable(ckpts, False)
  stderr = err.read_text()
  assert rc == 4, stderr[-2000:]
  assert _last_line(stderr).startswith(
    f'error: checkpoint step 20 could not be written to {ckpts}: '
  ), stderr[-2000:]
  assert 'Traceback' not in stderr
  assert ended_after < 30, ended_after  # compilation and 20 steps, not orbax's 20 minutes
  assert not [d for d in os.listdir(ckpts) if d.isdigit()]


class _Iterator:
  def get_state(self):
    return {'position': 1}


def test_a_background_write_that_fails_is_raised_by_the_next_check(tmp_path):
  import jax.numpy as jnp

  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=3)
  state = {'w': jnp.ones((4096, 4096))}  # 64 MiB: still being written when the folder locks
  error = None
  try:
    for step in (1, 2, 3):  # another step if the write won the race
      ckpt.save(step, state, _Iterator(), {})
      tmp = tmp_path / f'{step}.orbax-checkpoint-tmp'
      if not _immutable(tmp, True):  # the items cannot be moved into place
        continue
      try:
        deadline = time.time() + 60
        while ckpt.manager.is_saving_in_progress() and time.time() < deadline:
          time.sleep(0.01)
        ckpt.check()
      except CheckpointWriteError as e:
        error = str(e)
        break
      finally:
        _immutable(tmp, False)
    assert error and error.startswith(
      f'checkpoint step {step} could not be written to {tmp_path}: '
    )
    assert 'Operation not permitted' in error
  finally:
    start = time.time()
    ckpt.close()
    assert time.time() - start < 10
