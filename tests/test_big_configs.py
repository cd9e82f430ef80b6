"""The shipped full-size MSM configs validate for their target and fit its chip's memory.

Shapes only (eval_shape on an abstract mesh): no memory is used.
"""
import jax
import pytest

from configs import msm_llama3_8b, msm_qwen3_32b
from mtspec import config, memory, optim, sharding, train_state

TARGETS = [(msm_llama3_8b, v) for v in msm_llama3_8b.TARGETS] + [
    (msm_qwen3_32b, v) for v in msm_qwen3_32b.TARGETS]


@pytest.mark.parametrize('module,variant', TARGETS, ids=[v for _, v in TARGETS])
def test_config_fits_its_target(module, variant):
  devices, gib, *_ = module.TARGETS[variant]
  cfg = module.get_config(variant)
  mesh_shape = config.validate(cfg, n_devices=devices)
  mesh = jax.sharding.AbstractMesh(mesh_shape, sharding.MESH_AXES)
  opt = optim.make_optimizer(cfg.train, optim.lr_schedule(1e-5, 100, 5, 'cosine', 0.1))
  shapes = train_state.model_shapes(cfg.model)
  shards = train_state.state_shardings(mesh, opt, shapes)
  est = memory.estimate(cfg, train_state.abstract_state(opt, shapes.params, shards), shards,
                        dict(mesh.shape))
  assert est.total / memory.GIB < 0.9 * gib, est.table(gib)  # 10% headroom for XLA buffers
  # the whole model never sits on one device: every large parameter is split
  assert est.params < 0.5 * sum(x.size * 4 for x in jax.tree.leaves(shapes.params))


def test_an_impossible_target_is_reported():
  cfg = msm_qwen3_32b.get_config('v5p-32')
  cfg.mesh.shape = (1, 2, 1)  # 32B with f32 Adam state on two chips cannot fit 95 GiB
  mesh = jax.sharding.AbstractMesh((1, 2, 1), sharding.MESH_AXES)
  opt = optim.make_optimizer(cfg.train, optim.lr_schedule(1e-5, 100, 5, 'cosine', 0.1))
  shapes = train_state.model_shapes(cfg.model)
  shards = train_state.state_shardings(mesh, opt, shapes)
  est = memory.estimate(cfg, train_state.abstract_state(opt, shapes.params, shards), shards,
                        dict(mesh.shape))
  assert 'DOES NOT FIT' in est.table(95)
