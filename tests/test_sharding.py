import json

import jax
import pytest
from conftest import run_module

from mtspec import sharding, train_state


def test_eight_devices_match_one_device():
  out = run_module(
    ['tests/sharded_step_check.py'], env={'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
  )
  r = json.loads(out.stdout.strip().splitlines()[-1])
  assert r['w_up_spec_8'] == "P('fsdp', 'tensor')"  # really sharded
  assert abs(r['loss_1'] - r['loss_8']) <= 1e-5 * abs(r['loss_1'])
  assert abs(r['step_loss_1'] - r['step_loss_8']) <= 1e-5 * abs(r['step_loss_1'])
  assert r['grad_max_diff'] <= 1e-5 * max(r['grad_max_abs'], 1.0)
  assert r['param_max_diff'] <= 1e-5


def test_mesh_shape_resolution():
  assert sharding.resolve_mesh_shape((1, -1, 1), 8) == (1, 8, 1)
  assert sharding.resolve_mesh_shape((2, -1, 2), 8) == (2, 2, 2)
  with pytest.raises(ValueError, match='needs 4 devices'):
    sharding.resolve_mesh_shape((2, 2, 1), 8)
  with pytest.raises(ValueError, match='at most one -1'):
    sharding.resolve_mesh_shape((-1, -1, 1), 8)


def test_every_parameter_has_logical_axes(tiny_config):
  shapes = train_state.model_shapes(tiny_config.model)
  names = list(train_state.flat_params(shapes.logical_axes))
  assert len(names) == len(jax.tree.leaves(shapes.params))
  for name, axes in names:
    assert all(a in sharding.RULES for a in axes), name
