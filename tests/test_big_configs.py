"""The shipped full-size MSM configs validate for their target and fit its chip's memory.

Shapes only (eval_shape on an abstract mesh): no memory is used.
"""

import jax
import pytest

from configs import msm_llama3_8b, msm_qwen3_32b
from mtspec import config, memory, optim, sharding, train_state

TARGETS = [
  (m, v + mode) for m in (msm_llama3_8b, msm_qwen3_32b) for v in m.TARGETS for mode in ('', '-full')
]


def _estimate(cfg, mesh_shape):
  mesh = jax.sharding.AbstractMesh(mesh_shape, sharding.MESH_AXES)
  opt = optim.make_optimizer(cfg.train, optim.lr_schedule(1e-5, 100, 5, 'cosine', 0.1))
  shapes = train_state.model_shapes(cfg.model)
  trained, shards, base_shards, _ = train_state.trained_setup(cfg, mesh, opt, shapes)
  frozen = (shapes.params, base_shards) if base_shards else None
  return memory.estimate(
    cfg, train_state.abstract_state(opt, trained, shards), shards, dict(mesh.shape), frozen
  ), shapes


@pytest.mark.parametrize('module,variant', TARGETS, ids=[v for _, v in TARGETS])
def test_config_fits_its_target(module, variant):
  devices, gib, *_ = module.TARGETS[variant.removesuffix('-full')]
  cfg = module.get_config(variant)
  assert (cfg.lora.rank == 0) == variant.endswith('-full')
  est, shapes = _estimate(cfg, config.validate(cfg, n_devices=devices))
  assert est.total / memory.GIB < 0.9 * gib, est.table(gib)  # 10% headroom for XLA buffers
  # the whole model never sits on one device: every large parameter is split
  assert est.params < 0.5 * sum(x.size * 4 for x in jax.tree.leaves(shapes.params))


def test_an_impossible_target_is_reported():
  cfg = msm_qwen3_32b.get_config('v5p-32-full')
  cfg.mesh.shape = (1, 2, 1)  # 32B with f32 Adam state on two chips cannot fit 95 GiB
  est, _ = _estimate(cfg, (1, 2, 1))
  assert 'DOES NOT FIT' in est.table(95)


def test_lora_counts_the_frozen_base_but_trains_little():
  cfg = msm_llama3_8b.get_config('h100x8')
  est, shapes = _estimate(cfg, (1, 8, 1))
  base_bytes = sum(x.size * 2 for x in jax.tree.leaves(shapes.params)) / 8  # bf16, 8 shards
  assert est.params > base_bytes  # the frozen base is counted
  opt = optim.make_optimizer(cfg.train, optim.lr_schedule(1e-4, 100, 5, 'cosine', 0.1))
  mesh = jax.sharding.AbstractMesh((1, 8, 1), sharding.MESH_AXES)
  adapters = train_state.trained_setup(cfg, mesh, opt, shapes)[0]
  n_adapter = sum(x.size for x in jax.tree.leaves(adapters))
  n_base = sum(x.size for x in jax.tree.leaves(shapes.params))
  assert n_adapter < 0.03 * n_base  # rank 64 on every projection: ~2% of the model
  assert est.grads == n_adapter * 4  # only adapters have gradients (f32, replicated)
