import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import ROOT, fresh_state, run_module
from mtspec import checkpoint, optim, sharding, step, train_state, trainer
from mtspec.bench import synthetic_batch


def read_metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def test_loss_falls_on_builtin_data(tiny_config, tmp_path):
  tiny_config.phases.train.steps = 60
  tiny_config.train.update(log_every=5, ckpt_every=60)
  result = trainer.train(tiny_config, str(tmp_path), show_progress=False)
  rows = read_metrics(tmp_path)
  first, last = rows[0]['loss'], rows[-1]['loss']
  assert last < 0.6 * first, (first, last)
  assert last < 3.5
  for key in ('loss', 'grad_norm', 'lr', 'tokens_per_second', 'mfu'):
    assert key in rows[-1]
  assert 0 < rows[-1]['mfu'] < 1
  assert result['step'] == 60
  assert os.listdir(tmp_path / 'tb')  # TensorBoard event files


def _one_step(cfg, accum):
  cfg.train.grad_accum = accum
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  t = cfg.train
  schedule, opt, shapes, shards, state = fresh_state(cfg, mesh)
  batch = synthetic_batch(cfg.model.vocab_size, t.batch_size, t.seq_len)
  batch['loss_weights'][:, ::3] = 0.0  # uneven weights across microbatches
  batch['loss_weights'][0] = 0.0
  new_state, m = step.make_train_step(shapes.graphdef, opt, schedule, accum, shards, mesh)(
      state, sharding.to_global(batch, mesh))
  return jax.tree.map(np.asarray, new_state['params']), jax.device_get(m)


def test_gradient_accumulation_matches_full_batch(tiny_config):
  p1, m1 = _one_step(tiny_config, 1)
  p4, m4 = _one_step(tiny_config, 4)
  np.testing.assert_allclose(m4['loss'], m1['loss'], rtol=1e-6)
  np.testing.assert_allclose(m4['grad_norm'], m1['grad_norm'], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), p4, p1)


def test_schedules():
  cos = optim.lr_schedule(1.0, 100, 10, 'cosine', 0.1)
  assert float(cos(0)) == 0.0 and float(cos(10)) == pytest.approx(1.0)
  assert float(cos(100)) == pytest.approx(0.1)
  wsd = optim.lr_schedule(1.0, 100, 10, 'wsd', 0.0, decay_fraction=0.2)
  assert float(wsd(50)) == pytest.approx(1.0) and float(wsd(82)) == pytest.approx(1.0)
  assert float(wsd(91)) == pytest.approx(0.5, abs=0.02) and float(wsd(100)) == pytest.approx(0.0)


def _cmd(workdir):
  return [sys.executable, '-m', 'mtspec.main', '--config=configs/lm.py:tiny',
          f'--workdir={workdir}', '--config.phases.train.steps=40', '--config.train.ckpt_every=10']


def test_killed_run_resumes_to_identical_params(tmp_path):
  full, killed = tmp_path / 'full', tmp_path / 'killed'
  run_module(_cmd(full)[1:])
  env = {**os.environ, 'PYTHONPATH': ROOT}
  proc = subprocess.Popen(_cmd(killed), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  ckpt_dir = killed / 'checkpoints'
  deadline = time.time() + 300
  while not (ckpt_dir / '10').exists() and time.time() < deadline and proc.poll() is None:
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  steps_at_kill = sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
  assert steps_at_kill and max(steps_at_kill) < 40, steps_at_kill  # really interrupted
  run_module(_cmd(killed)[1:])  # the same command again: resumes
  p_full, s_full = checkpoint.load_params(str(full / 'checkpoints'))
  p_res, s_res = checkpoint.load_params(str(killed / 'checkpoints'))
  assert s_full == s_res == 40
  jax.tree.map(np.testing.assert_array_equal, p_res, p_full)
  with pytest.raises(FileNotFoundError, match=r'no checkpoint at step 7 under .*full.*steps there: .*40'):
    checkpoint.load_params(str(full / 'checkpoints'), 7)
