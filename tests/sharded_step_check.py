"""Run in a subprocess with 8 simulated CPU devices (XLA_FLAGS set by the test).

Computes the loss, gradients and one full train step on a 1-device mesh and on a
(data=2, fsdp=2, tensor=2) mesh, and prints the largest differences as JSON.
"""

import json

import jax
import numpy as np
from conftest import fresh_state
from flax import nnx

from configs import lm
from mtspec import sharding, step
from mtspec.bench import synthetic_batch


def run(mesh_shape, devices, cfg, batch_np):
  mesh = sharding.make_mesh(mesh_shape, devices)
  t = cfg.train
  schedule, opt, shapes, shards, state = fresh_state(cfg, mesh)
  batch = sharding.to_global(batch_np, mesh)
  loss_fn = lambda p, b: step.weighted_loss_sums(nnx.merge(shapes.graphdef, p), b)[0]
  grad_fn = jax.jit(
    jax.value_and_grad(loss_fn), in_shardings=(shards['params'], sharding.batch_sharding(mesh))
  )
  with jax.set_mesh(mesh):
    loss, grads = grad_fn(state['params'], batch)
  shard_spec = state['params']['layers'][0]['mlp']['w_up'].sharding.spec
  train = step.make_train_step(shapes.graphdef, opt, schedule, t.grad_accum, shards, mesh)
  new_state, metrics = train(state, batch)
  to_np = lambda tree: jax.tree.map(np.asarray, tree)
  return (
    float(loss),
    to_np(grads),
    to_np(new_state['params']),
    float(metrics['loss']),
    str(shard_spec),
  )


def max_diff(a, b):
  return max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def main():
  assert jax.device_count() == 8, jax.device_count()
  cfg = lm.get_config('tiny')
  batch = synthetic_batch(cfg.model.vocab_size, cfg.train.batch_size, cfg.train.seq_len)
  l1, g1, p1, m1, s1 = run((1, 1, 1), jax.devices()[:1], cfg, batch)
  l8, g8, p8, m8, s8 = run((2, 2, 2), jax.devices(), cfg, batch)
  print(
    json.dumps(
      {
        'loss_1': l1,
        'loss_8': l8,
        'step_loss_1': m1,
        'step_loss_8': m8,
        'grad_max_diff': max_diff(g1, g8),
        'grad_max_abs': max(float(np.abs(x).max()) for x in jax.tree.leaves(g1)),
        'param_max_diff': max_diff(p1, p8),
        'w_up_spec_8': s8,
      }
    )
  )


if __name__ == '__main__':
  main()
