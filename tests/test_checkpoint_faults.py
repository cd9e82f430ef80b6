"""Faults on long runs: checkpoint folders that refuse writes, damaged checkpoints, and the
metrics of a run that resumes. Real runs in subprocesses (a hang meets their timeout).

Refused writes are real: the tests run as root, where chmod stops nothing, so a folder is
made immutable (chattr +i) or the checkpoint folder's path is taken by a regular file.
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, run_module

from mtspec import checkpoint
from mtspec.errors import CheckpointWriteError

CMD = ['-m', 'mtspec.main', '--config=configs/lm.py:tiny']
# checkpoints every 20 steps, metrics every 5 (the tiny config); all five checkpoints kept
FLAGS = ['--config.phases.train.steps=100', '--config.train.keep_ckpts=5']
STEPS = [20, 40, 60, 80, 100]


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


def _rows(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def test_a_checkpoint_folder_that_is_not_writable_stops_the_run_before_it_starts(tmp_path):
  (tmp_path / 'checkpoints').write_text('')  # its path taken by a file
  proc = _main(tmp_path, timeout=60)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert _last_line(proc.stderr).startswith(
    f'error: {tmp_path}/checkpoints is not a writable folder'
  )
  assert 'Traceback' not in proc.stderr
  assert not (tmp_path / 'data').exists()  # before data preparation


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


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
  """An uninterrupted run of 100 steps (checkpoints at 20, 40, ..., 100)."""
  workdir = tmp_path_factory.mktemp('faults') / 'finished'
  proc = _main(workdir, *FLAGS)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


def _shared_data(finished):
  """Flags that reuse the finished run's corpus and tokenizer instead of building them."""
  return [
    f'--config.data.tfds_data_dir={finished}/data',
    f'--config.data.tokenizer={finished}/tokenizer.model',
  ]


def _copy(finished, workdir):
  shutil.copytree(finished, workdir)
  return workdir / 'checkpoints'


def test_a_save_refused_mid_run_ends_the_run_at_once_naming_the_folder(finished, tmp_path):
  ckpts, out, err = tmp_path / 'checkpoints', tmp_path / 'out.txt', tmp_path / 'err.txt'
  with open(out, 'w') as stdout, open(err, 'w') as stderr:
    proc = subprocess.Popen(
      [sys.executable, *CMD, f'--workdir={tmp_path}', *_shared_data(finished)],
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


def _truncate_data_files(step_dir):
  """Cuts the array data files short: all of them, as which arrays share a file varies from
  run to run; the small b-tree node files stay whole."""
  for root, _, files in os.walk(step_dir / 'state'):
    for path in [os.path.join(root, f) for f in files]:
      if 'ocdbt.process_' in root and os.path.getsize(path) > 4096:
        os.truncate(path, os.path.getsize(path) // 2)


def _read_events(path):
  from tensorboardX.proto import event_pb2

  with open(path, 'rb') as f:
    data = f.read()
  i = 0
  while i < len(data):
    (n,) = struct.unpack('<Q', data[i : i + 8])
    yield event_pb2.Event.FromString(data[i + 12 : i + 12 + n])
    i += 12 + n + 4


def _tensorboard_losses(workdir) -> dict:
  """step -> loss as TensorBoard shows it: a SessionLog START at step P hides the events
  logged earlier at steps >= P (the purge of a resumed run)."""
  losses = {}
  tb = workdir / 'tb'
  for name in sorted(os.listdir(tb)):  # event files are named by creation time
    for event in _read_events(tb / name):
      if event.HasField('session_log') and event.session_log.status == event.session_log.START:
        losses = {s: v for s, v in losses.items() if s < event.step}
      for value in event.summary.value:
        if value.tag == 'loss':
          assert event.step not in losses, f'loss at step {event.step} twice'
          losses[event.step] = value.simple_value
  return losses


def test_damaged_checkpoints_are_named_and_the_run_resumes_from_the_newest_intact(
  finished, tmp_path
):
  ckpts = _copy(finished, tmp_path / 'run')
  _truncate_data_files(ckpts / '100')
  shutil.rmtree(ckpts / '80' / 'state')
  (ckpts / '60' / 'meta' / 'metadata').write_text('')
  (ckpts / '40' / 'state' / '_METADATA').write_text('')
  proc = _main(tmp_path / 'run', *FLAGS)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout
  for step, what in [
    (100, 'it could not be read: OUT_OF_RANGE'),
    (80, 'its state/ item is missing'),
    (60, 'meta/metadata is empty'),
    (40, 'state/_METADATA is empty'),
  ]:
    assert f'checkpoint step {step} is damaged ({ckpts}/{step}): {what}' in out, out
    assert (ckpts / f'{step}.damaged').is_dir()  # moved aside, not deleted
  assert 'resuming from checkpoint step 20; moved the damaged step 100' in out, out
  assert sorted(int(d) for d in os.listdir(ckpts) if d.isdigit()) == STEPS

  want = checkpoint.checkpoint_params(str(finished))
  got = checkpoint.checkpoint_params(str(tmp_path / 'run'))
  assert want.keys() == got.keys()
  for (name, a), (_, b) in zip(sorted(_flat(want)), sorted(_flat(got))):
    np.testing.assert_array_equal(a, b, err_msg=name)  # bit-identical

  rows, ref = _rows(tmp_path / 'run'), _rows(finished)
  assert [r['step'] for r in rows] == list(range(5, 101, 5))  # each logged step once
  assert [r['loss'] for r in rows] == [r['loss'] for r in ref]
  tb = _tensorboard_losses(tmp_path / 'run')
  assert sorted(tb) == list(range(5, 101, 5))
  assert [tb[r['step']] for r in rows] == [np.float32(r['loss']) for r in rows]


def _flat(tree, prefix=''):
  if isinstance(tree, dict):
    for k, v in tree.items():
      yield from _flat(v, f'{prefix}{k}.')
  else:
    yield prefix, np.asarray(tree)


def test_with_no_intact_checkpoint_the_run_stops_and_changes_nothing(finished, tmp_path):
  ckpts = _copy(finished, tmp_path / 'run')
  for step in STEPS:
    (ckpts / str(step) / '_CHECKPOINT_METADATA').write_text('{"item_handlers": ')
  before = sorted(os.listdir(ckpts))
  proc = _main(tmp_path / 'run', *FLAGS)
  assert proc.returncode == 2, proc.stderr[-3000:]
  line = _last_line(proc.stderr)
  assert line.startswith(f'error: no intact checkpoint under {ckpts} (nothing was moved')
  for step in STEPS:
    assert f'step {step}: _CHECKPOINT_METADATA is not valid JSON' in line
  assert 'Traceback' not in proc.stderr
  assert sorted(os.listdir(ckpts)) == before


@pytest.mark.parametrize('kind', ['truncated', 'not a checkpoint'])
def test_a_damaged_init_checkpoint_is_one_error_naming_it(finished, tmp_path, kind):
  bad = tmp_path / 'bad'
  if kind == 'truncated':
    shutil.copytree(finished / 'checkpoints' / '100', bad)
    _truncate_data_files(bad)
    what = 'could not be read: OUT_OF_RANGE'
  else:
    (bad / 'state').mkdir(parents=True)
    (bad / 'state' / 'notes.txt').write_text('not orbax')
    what = 'is a damaged checkpoint: state/_METADATA is missing'
  proc = _main(
    tmp_path / 'run', f'--config.init.checkpoint={bad}', *_shared_data(finished), timeout=60
  )
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert _last_line(proc.stderr).startswith(f"error: init.checkpoint='{bad}' {what}"), proc.stderr
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
