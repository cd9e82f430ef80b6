"""Per-device memory estimate, from shapes and shardings alone (printed before compiling).

State bytes are exact: every leaf of params, optimizer state and gradients, divided by the
number of devices its sharding splits it over. Activations are an estimate (Korthikanti et
al. 2022, per layer and token: ~34 x width bytes at 16 bits, less with remat; attention
scores excluded, as flash attention never stores them), plus float32 logits and their grads.
"""

import dataclasses

import jax
import jax.numpy as jnp

GIB = 2**30


@dataclasses.dataclass
class Estimate:
  params: float
  optimizer: float
  grads: float
  activations: float
  logits: float

  @property
  def total(self) -> float:
    return self.params + self.optimizer + self.grads + self.activations + self.logits

  def table(self, device_gib: float | None = None) -> str:
    rows = [
      (k, getattr(self, k)) for k in ('params', 'optimizer', 'grads', 'activations', 'logits')
    ] + [('total', self.total)]
    text = ', '.join(f'{k} {v / GIB:.2f}' for k, v in rows) + ' GiB per device'
    if device_gib:
      fits = 'fits' if self.total / GIB < device_gib else 'DOES NOT FIT'
      text += f' (device has {device_gib:.0f} GiB: {fits})'
    return text


def _sharded_bytes(abstract_tree, shardings, mesh_shape: dict) -> float:
  total = 0.0
  for leaf, sharding in zip(jax.tree.leaves(abstract_tree), jax.tree.leaves(shardings)):
    split = 1
    for axes in sharding.spec:
      for a in axes if isinstance(axes, tuple) else (axes,):
        split *= mesh_shape.get(a, 1) if a else 1
    total += leaf.size * jnp.dtype(leaf.dtype).itemsize / split
  return total


ACTIVATION_FACTOR = {'none': 34.0, 'dots': 12.0, 'full': 2.0}  # bytes per token per width (16-bit)


def estimate(cfg, abstract_state: dict, shardings: dict, mesh_shape: dict, frozen=None) -> Estimate:
  """frozen: (abstract params, shardings) of a frozen base (LoRA), counted with the params."""
  m, t = cfg.model, cfg.train
  trained = _sharded_bytes(abstract_state['params'], shardings['params'], mesh_shape)
  params = trained + (_sharded_bytes(*frozen, mesh_shape) if frozen else 0.0)
  opt = _sharded_bytes(abstract_state['opt_state'], shardings['opt_state'], mesh_shape)
  batch_split = mesh_shape.get('data', 1) * mesh_shape.get('fsdp', 1)
  tokens = t.batch_size // t.grad_accum * t.seq_len / batch_split
  scale = jnp.dtype(m.dtype).itemsize / 2  # the factors assume 16-bit activations
  # Conservative: no sequence parallelism, so only the logits split over `tensor`.
  acts = tokens * m.n_layers * m.d_model * ACTIVATION_FACTOR[m.remat] * scale
  logits = tokens * m.vocab_size * 4 * 2 / mesh_shape.get('tensor', 1)
  return Estimate(params, opt, trained, acts, logits)


def device_gib() -> float | None:
  """Memory of one device, where the runtime reports it (GPU, TPU); None on CPU."""
  stats = jax.devices()[0].memory_stats() or {}
  limit = stats.get('bytes_limit')
  return limit / GIB if limit else None
