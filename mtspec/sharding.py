"""All partitioning in one place: logical axis names -> mesh axes.

Parameters and key activations carry logical names (see model.py); this table is the only
place that says which mesh axis each name is split over. The mesh always has the axes
(data, fsdp, tensor); changing the mesh shape in the config is all it takes to move from one
CPU to a pod slice.
"""

import math

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ('data', 'fsdp', 'tensor')

# logical name -> mesh axis (or tuple of axes, or None = replicated)
RULES = {
  # parameters
  'vocab': 'tensor',
  'embed': 'fsdp',
  'heads': 'tensor',
  'kv_heads': 'tensor',
  'head_dim': None,
  'mlp': 'tensor',
  'norm': None,
  # activations
  'batch': ('data', 'fsdp'),
  'seq': None,
  'act_embed': None,
  'act_heads': 'tensor',
  'act_kv_heads': 'tensor',
  'act_mlp': 'tensor',
  'act_vocab': 'tensor',
}


def resolve_mesh_shape(shape, n_devices: int) -> tuple[int, ...]:
  """Replaces a single -1 by whatever makes the product equal n_devices."""
  shape = tuple(int(s) for s in shape)
  if len(shape) != len(MESH_AXES):
    raise ValueError(f'mesh.shape must have {len(MESH_AXES)} entries {MESH_AXES}, got {shape}')
  if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
    raise ValueError(f'mesh.shape {shape}: use positive sizes and at most one -1')
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if n_devices % known:
      raise ValueError(f'mesh.shape {shape}: {n_devices} devices are not divisible by {known}')
    shape = tuple(n_devices // known if s == -1 else s for s in shape)
  if math.prod(shape) != n_devices:
    raise ValueError(
      f'mesh.shape {shape} needs {math.prod(shape)} devices, but {n_devices} are available'
    )
  return shape


def make_mesh(shape, devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  shape = resolve_mesh_shape(shape, len(devices))
  return jax.make_mesh(
    shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices
  )


def spec(logical_axes) -> P:
  return P(*(RULES[name] if name is not None else None for name in logical_axes))


def named(mesh: Mesh, logical_axes) -> NamedSharding:
  return NamedSharding(mesh, spec(logical_axes))


def constrain(x: jax.Array, logical_axes) -> jax.Array:
  """Activation sharding hint; a no-op outside a mesh context (eager tests, eval_shape)."""
  if jax.sharding.get_abstract_mesh().empty:
    return x
  return jax.lax.with_sharding_constraint(x, spec(logical_axes))


def mesh_axis_size(mesh: Mesh, axis) -> int:
  if axis is None:
    return 1
  axes = axis if isinstance(axis, tuple) else (axis,)
  return math.prod(mesh.shape[a] for a in axes)


def check_divisible(mesh: Mesh, name: str, shape, logical_axes):
  """Fails early (before compilation) when a sharded dimension does not split evenly."""
  for dim, logical in zip(shape, logical_axes):
    n = mesh_axis_size(mesh, RULES.get(logical) if logical else None)
    if dim % n:
      raise ValueError(
        f'{name}: dimension {logical!r} of size {dim} is split over mesh axes '
        f'{RULES[logical]} of size {n}, which does not divide it; change '
        f'mesh.shape or the model size'
      )


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  return named(mesh, ('batch',) + ('seq',) * (ndim - 1))


def to_global(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles each process's local rows into one global array on the mesh."""
  return {
    k: jax.make_array_from_process_local_data(batch_sharding(mesh, v.ndim), v)
    for k, v in batch.items()
  }
