"""One run per workdir (mtspec.workdir): a second run is refused by name within seconds and
changes nothing; a lock left by a killed process is taken over."""

import json
import os
import signal
import subprocess
import sys
import time

from conftest import ROOT, run_module
from test_stages import assert_same_params

from mtspec import trainer

TINY = ['-m', 'mtspec.main', '--config=configs/lm.py:tiny']
HOLD = (
  'import sys, time; from mtspec import workdir\n'
  'with workdir.lock(sys.argv[1]):\n'
  '  print("held", flush=True); time.sleep(600)\n'
)


def _holder(workdir) -> str:
  """What the lock's pid file says: '' once a holder has ended cleanly."""
  try:
    return (workdir / '.lock.pid').read_text()
  except FileNotFoundError:
    return ''


def _wait_for(condition, what: str, timeout: float = 300):
  deadline = time.time() + timeout
  while not condition():
    assert time.time() < deadline, f'timed out waiting for {what}'
    time.sleep(0.01)


def _hold(workdir) -> subprocess.Popen:
  """A process that holds workdir's lock until it is killed."""
  proc = subprocess.Popen(
    [sys.executable, '-c', HOLD, str(workdir)],
    cwd=ROOT,
    stdout=subprocess.PIPE,
    text=True,
    env={**os.environ, 'PYTHONPATH': ROOT},
  )
  assert proc.stdout.readline().strip() == 'held'
  return proc


def _refusal(proc, workdir, pid: int):
  assert proc.returncode == 2, proc.stderr
  errors = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
  assert errors == [
    f'error: workdir {workdir} is in use by pid {pid}; wait for it to finish '
    'or choose another directory'
  ]


def test_a_second_run_in_a_busy_workdir_is_refused_and_the_first_is_unchanged(tmp_path):
  busy, alone = tmp_path / 'busy', tmp_path / 'alone'
  first = subprocess.Popen(
    [sys.executable, *TINY, f'--workdir={busy}'],
    cwd=ROOT,
    env={**os.environ, 'PYTHONPATH': ROOT},
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  try:
    _wait_for(lambda: _holder(busy) == f'pid {first.pid}', 'the first run to take the lock')
    first.send_signal(signal.SIGSTOP)  # it holds the lock, wherever it is, until SIGCONT
    t = time.time()
    second = run_module([*TINY, f'--workdir={busy}'], check=False, timeout=120)
    took = time.time() - t
    first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=300) == 0
  finally:
    first.kill()
    first.wait()
  _refusal(second, busy, first.pid)
  assert took < 30  # python and jax start, then the refusal: no training, no data
  run_module([*TINY, f'--workdir={alone}'])
  for run in (busy, alone):
    with open(run / 'summary.json') as f:
      assert json.load(f)['step'] == 40
  assert_same_params(trainer.checkpoint_params(str(busy)), trainer.checkpoint_params(str(alone)))
  assert _holder(busy) == ''  # released when the run ended


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
  workdir = tmp_path / 'w'
  holder = _hold(workdir)
  holder.kill()
  holder.wait()
  assert _holder(workdir) == f'pid {holder.pid}'  # left behind; the OS lock went with it
  proc = run_module([*TINY, f'--workdir={workdir}'])
  assert (
    f'workdir {workdir}: pid {holder.pid} left its lock behind and no longer holds it; '
    'taking it over'
  ) in proc.stdout
  with open(workdir / 'summary.json') as f:
    assert json.load(f)['step'] == 40
  assert _holder(workdir) == ''


def test_spec_generate_is_refused_in_a_busy_out_dir(tmp_path):
  out = tmp_path / 'spec'
  holder = _hold(out)
  try:
    proc = run_module(
      [
        '-m',
        'mtspec.spec',
        'generate',
        '--spec=configs/specs/cheese_home.md',
        f'--out={out}',
        '--set',
        'home_country=Norland',
      ],
      check=False,
    )
  finally:
    holder.kill()
    holder.wait()
  _refusal(proc, out, holder.pid)
  assert sorted(os.listdir(out)) == ['.lock', '.lock.pid']  # refused before writing anything
