"""Subprocess with 8 simulated devices: restore a 1-device run's checkpoint onto (2,2,2)."""

import json
import sys

import jax
import numpy as np

from configs import lm
from mtspec import optim, sharding, train_state
from mtspec.checkpoint import checkpoint_params, load_params, restore_from_path


def main(run_dir):
  cfg = lm.get_config('tiny')
  mesh = sharding.make_mesh((2, 2, 2))
  opt = optim.make_optimizer(cfg.train, optim.lr_schedule(1e-3, 10, 1, 'cosine', 0.1))
  shapes = train_state.model_shapes(cfg.model)
  shards = train_state.state_shardings(mesh, opt, shapes)
  target = train_state.abstract_state(opt, shapes.params, shards)
  want = checkpoint_params(run_dir)
  step = load_params(f'{run_dir}/checkpoints')[1]
  restored, _ = restore_from_path(f'{run_dir}/checkpoints/{step}', target, 'params')
  got = restored['params']
  diff = max(
    float(np.max(np.abs(np.asarray(a) - b)))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want))
  )
  print(
    json.dumps(
      {
        'devices': jax.device_count(),
        'max_diff': diff,
        'w_up_spec': str(got['layers'][0]['mlp']['w_up'].sharding.spec),
      }
    )
  )


if __name__ == '__main__':
  main(sys.argv[1])
