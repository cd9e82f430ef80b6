import json
import os

import jax
import numpy as np
import pytest
from conftest import fresh_state

from mtspec import checkpoint, optim, sharding, step, trainer
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
  # a step that was never saved is named, with the steps that were
  with pytest.raises(FileNotFoundError, match=r'no checkpoint at step 7 under .*steps there: .*60'):
    checkpoint.load_params(str(tmp_path / 'checkpoints'), 7)


def _one_step(cfg, accum):
  cfg.train.grad_accum = accum
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  t = cfg.train
  schedule, opt, shapes, shards, state = fresh_state(cfg, mesh)
  batch = synthetic_batch(cfg.model.vocab_size, t.batch_size, t.seq_len)
  batch['loss_weights'][:, ::3] = 0.0  # uneven weights across microbatches
  batch['loss_weights'][0] = 0.0
  new_state, m = step.make_train_step(shapes.graphdef, opt, schedule, accum, shards, mesh)(
    state, sharding.to_global(batch, mesh)
  )
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
