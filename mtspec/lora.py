"""LoRA adapters over a frozen base: W_eff = W + (alpha / rank) * A @ B.

Adapters live in their own tree (the only thing the optimizer and checkpoints hold when the
base is frozen) and are merged into the base params inside the jitted step, so the model
code needs no LoRA branches; with dropout, `with_dropout` wraps the model's linear op instead.
A is (in, rank) with a small random init, B is (rank, out) zero-initialised: at step 0 the
adapted model equals the base exactly. The same adapter tree continues from one phase into
the next like any other train state.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

# target module name -> path suffix of the parameter it adapts, and how its dims split into
# (input dims, output dims) around the rank.
TARGETS = {
  'q': (('attn', 'wq'), 1),
  'k': (('attn', 'wk'), 1),
  'v': (('attn', 'wv'), 1),
  'o': (('attn', 'wo'), 2),
  'gate': (('mlp', 'w_gate'), 1),
  'up': (('mlp', 'w_up'), 1),
  'down': (('mlp', 'w_down'), 1),
}
ALL_TARGETS = tuple(TARGETS)


def _targets(names):
  unknown = [n for n in names if n not in TARGETS]
  if unknown:
    raise ValueError(f'config.lora.targets: unknown {unknown}; expected some of {ALL_TARGETS}')
  return [TARGETS[n] for n in names]


def adapter_shapes(params: dict, names, rank: int) -> dict:
  """{layer index: {target: (a_shape, b_shape)}} for the targets in every layer."""
  out = {}
  for i, layer in params['layers'].items():
    out[i] = {}
    for (module, weight), n_in in _targets(names):
      shape = tuple(layer[module][weight].shape)
      out[i][f'{module}.{weight}'] = (
        (math.prod(shape[:n_in]), rank),
        (rank, math.prod(shape[n_in:])),
      )
  return out


def init(params: dict, names, rank: int, key, dtype=jnp.float32) -> dict:
  adapters = {}
  for i, targets in adapter_shapes(params, names, rank).items():
    adapters[i] = {}
    for name, (a_shape, b_shape) in targets.items():
      key, sub = jax.random.split(key)
      adapters[i][name] = {
        'a': jax.random.normal(sub, a_shape, dtype) / math.sqrt(a_shape[0]),
        'b': jnp.zeros(b_shape, dtype),
      }
  return adapters


def merge(params: dict, adapters: dict, alpha: float, rank: int) -> dict:
  """Base params with every adapter folded in (a new tree; the base is unchanged)."""
  layers = {}
  for i, layer in params['layers'].items():
    layer = {m: dict(v) if isinstance(v, dict) else v for m, v in layer.items()}
    for name, ab in adapters.get(i, {}).items():
      module, weight = name.split('.')
      w = layer[module][weight]
      delta = (ab['a'] @ ab['b']).reshape(w.shape) * (alpha / rank)
      layer[module][weight] = w + delta.astype(w.dtype)
    layers[i] = layer
  return {**params, 'layers': layers}


class Settings(NamedTuple):
  alpha: float
  rank: int
  dropout: float
  seed: int  # with the step, seeds the dropout masks


def settings(cfg) -> Settings | None:
  """The config's LoRA settings, or None when it trains every parameter."""
  if cfg.get('lora') is None or cfg.lora.rank <= 0:
    return None
  l = cfg.lora
  return Settings(float(l.alpha), int(l.rank), float(l.dropout), int(cfg.train.seed))


class _DroppedOut:
  """Stands in for a module's `linear`: adapted weights give x W + scale * dropout(x) A B."""

  def __init__(self, module, adapters: dict, scale: float, rate: float):
    self.module, self.adapters, self.scale, self.rate = module, adapters, scale, rate

  def __call__(self, name: str, x, n_contract: int = 1):
    if name not in self.adapters:
      return type(self.module).linear(self.module, name, x, n_contract)
    ab, key = self.adapters[name]
    dt = self.module.dtype
    w = getattr(self.module, name)[...].astype(dt)
    # One 2-D view of x feeds both products, so x's gradient accumulates as in model._matmul.
    x2d = x.reshape(-1, math.prod(w.shape[:n_contract]))
    y = jnp.dot(x2d, w.reshape(x2d.shape[1], -1))
    keep = jax.random.bernoulli(key, 1.0 - self.rate, x2d.shape)
    x_drop = jnp.where(keep, x2d / (1.0 - self.rate), 0).astype(dt)
    delta = (x_drop @ ab['a'].astype(dt)) @ ab['b'].astype(dt)
    y = y + (self.scale * delta).astype(y.dtype)
    return y.reshape(x.shape[: x.ndim - n_contract] + w.shape[n_contract:])


def with_dropout(model, adapters: dict, alpha: float, rank: int, rate: float, key):
  """The base model (nnx, frozen params) with LoRA dropout as PEFT computes it: each adapted
  weight W is applied as x W + (alpha / rank) * dropout(x) @ A @ B, the adapter kept apart
  (merging cannot express a dropout of the input). Module surgery on `model`, which it
  returns: each adapted module's `linear` is wrapped. One dropout key per layer and target."""
  for i, targets in adapters.items():
    per_module = {}
    for j, (name, ab) in enumerate(sorted(targets.items())):
      module, weight = name.split('.')
      sub = jax.random.fold_in(jax.random.fold_in(key, int(i)), j)
      per_module.setdefault(module, {})[weight] = (ab, sub)
    for module, weights in per_module.items():
      m = getattr(model.layers[int(i)], module)
      m.linear = _DroppedOut(m, weights, alpha / rank, rate)
  return model
