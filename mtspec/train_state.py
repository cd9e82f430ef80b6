"""The train state (params, optimizer state, step) and its shardings on a mesh."""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx, traverse_util

from mtspec import lora, optim, sharding
from mtspec.model import Transformer


class ModelShapes(NamedTuple):
  graphdef: Any  # nnx graph definition, merged with params inside jit
  params: dict  # abstract params (ShapeDtypeStruct), a plain nested dict
  logical_axes: dict  # same tree, logical axis names per parameter


def model_shapes(model_cfg) -> ModelShapes:
  """The model's graph and abstract params; cached by the config's content, because
  tracing a full-size model's initialisation takes seconds. The model keeps a frozen copy
  of the config, so editing model_cfg later changes neither it nor the cache."""
  shapes = _model_shapes(ml_collections.FrozenConfigDict(model_cfg))
  copy = lambda tree: jax.tree.map(lambda x: x, tree)  # callers may edit their dicts
  return ModelShapes(shapes.graphdef, copy(shapes.params), copy(shapes.logical_axes))


@functools.lru_cache(maxsize=16)
def _model_shapes(model_cfg: ml_collections.FrozenConfigDict) -> ModelShapes:
  abstract = nnx.eval_shape(lambda: Transformer(model_cfg, nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract, nnx.Param)
  is_var = lambda x: isinstance(x, nnx.Variable)
  axes = jax.tree.map(lambda v: v.get_metadata()['logical_axes'], state, is_leaf=is_var)
  return ModelShapes(graphdef, nnx.to_pure_dict(state), nnx.to_pure_dict(axes))


def flat_params(tree: dict) -> list[tuple[str, Any]]:
  """(dotted name, leaf) pairs of a nested params dict, sorted by name."""
  flat = {tuple(map(str, path)): leaf for path, leaf in traverse_util.flatten_dict(tree).items()}
  return [('.'.join(path), flat[path]) for path in sorted(flat)]


def param_shardings(mesh, shapes: ModelShapes) -> dict:
  is_axes = lambda x: isinstance(x, tuple)
  for (name, leaf), (_, axes) in zip(flat_params(shapes.params), flat_params(shapes.logical_axes)):
    sharding.check_divisible(mesh, f'parameter {name} {tuple(leaf.shape)}', leaf.shape, axes)
  return jax.tree.map(lambda axes: sharding.named(mesh, axes), shapes.logical_axes, is_leaf=is_axes)


def state_shardings(mesh, optimizer: optax.GradientTransformation, shapes: ModelShapes) -> dict:
  """Optimizer moments follow their parameter's sharding; counters are replicated."""
  p_shard = param_shardings(mesh, shapes)
  replicated = jax.sharding.NamedSharding(mesh, jax.P())
  abstract_opt = jax.eval_shape(optimizer.init, shapes.params)
  opt_shard = optax.tree_utils.tree_map_params(
    optimizer, lambda _, s: s, abstract_opt, p_shard, transform_non_params=lambda _: replicated
  )
  return {'params': p_shard, 'opt_state': opt_shard, 'step': replicated}


def init_params(model_cfg, seed: int, shardings) -> dict:
  """Freshly initialised params, created directly with their shardings."""
  return jax.jit(
    lambda: nnx.to_pure_dict(nnx.state(Transformer(model_cfg, nnx.Rngs(seed)), nnx.Param)),
    out_shardings=shardings,
  )()


def init_state(model_cfg, optimizer, seed: int, shardings: dict) -> dict:
  """Initialises directly onto the mesh: no host ever holds the whole model."""

  def init():
    model = Transformer(model_cfg, nnx.Rngs(seed))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return {'params': params, 'opt_state': optimizer.init(params), 'step': jnp.zeros((), jnp.int32)}

  return jax.jit(init, out_shardings=shardings)()


def state_from(optimizer, restored: dict, shardings: dict) -> dict:
  """A step-0 state from restored params, and optimizer state if restored (its schedule then
  restarts), else a fresh one for those params: no model init to throw away."""
  params = restored['params']
  if 'opt_state' in restored:
    opt_state = optim.restart_schedule(restored['opt_state'])
  else:
    opt_state = jax.jit(optimizer.init, out_shardings=shardings['opt_state'])(params)
  return {
    'params': params,
    'opt_state': opt_state,
    'step': jax.device_put(np.zeros((), np.int32), shardings['step']),
  }


def lora_state_shardings(mesh, optimizer, abstract_adapters) -> dict:
  """Adapters are small (rank x width per target): replicated, with their optimizer state."""
  replicated = jax.sharding.NamedSharding(mesh, jax.P())
  opt = jax.eval_shape(optimizer.init, abstract_adapters)
  rep = lambda tree: jax.tree.map(lambda _: replicated, tree)
  return {'params': rep(abstract_adapters), 'opt_state': rep(opt), 'step': replicated}


def init_lora_state(optimizer, init_adapters, shardings: dict) -> dict:
  def init():
    adapters = init_adapters()
    return {
      'params': adapters,
      'opt_state': optimizer.init(adapters),
      'step': jnp.zeros((), jnp.int32),
    }

  return jax.jit(init, out_shardings=shardings)()


def abstract_state(optimizer, params, shardings: dict) -> dict:
  """ShapeDtypeStructs carrying the target shardings: the restore target for orbax.

  params: the abstract trained tree (the model's params, or LoRA adapters).
  """
  tree = {
    'params': params,
    'opt_state': jax.eval_shape(optimizer.init, params),
    'step': jax.ShapeDtypeStruct((), jnp.int32),
  }
  return jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, shardings
  )


class Trained(NamedTuple):
  """What a run trains: the model's params, or LoRA adapters over a frozen base."""

  abstract: dict  # the abstract trained tree
  shardings: dict  # its train state's shardings
  base_shardings: dict | None  # the frozen base's (LoRA only)
  init_adapters: Any  # () -> fresh adapters (LoRA only)

  @property
  def lora(self) -> bool:
    return self.init_adapters is not None


def trained_setup(cfg, mesh, optimizer, shapes: ModelShapes) -> Trained:
  """Full fine-tuning trains the params; LoRA trains adapters over a frozen base."""
  if lora.settings(cfg) is None:
    return Trained(shapes.params, state_shardings(mesh, optimizer, shapes), None, None)
  l = cfg.lora
  init = lambda: lora.init(
    shapes.params, tuple(l.targets), l.rank, jax.random.key(cfg.train.seed), jnp.float32
  )
  trained = jax.eval_shape(init)
  return Trained(
    trained, lora_state_shardings(mesh, optimizer, trained), param_shardings(mesh, shapes), init
  )
