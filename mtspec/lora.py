"""LoRA adapters over a frozen base: W_eff = W + (alpha / rank) * A @ B.

Adapters live in their own tree (the only thing the optimizer and checkpoints hold when the
base is frozen) and are merged into the base params inside the jitted step, so the model
code needs no LoRA branches. A is (in, rank) with a small random init, B is (rank, out)
zero-initialised: at step 0 the adapted model equals the base exactly. The same adapter tree
continues from one phase into the next like any other train state.
"""
import math

import jax
import jax.numpy as jnp

# target module name -> path suffix of the parameter it adapts, and how its dims split into
# (input dims, output dims) around the rank.
TARGETS = {
    'q': (('attn', 'wq'), 1), 'k': (('attn', 'wk'), 1), 'v': (('attn', 'wv'), 1),
    'o': (('attn', 'wo'), 2), 'gate': (('mlp', 'w_gate'), 1), 'up': (('mlp', 'w_up'), 1),
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
      out[i][f'{module}.{weight}'] = ((math.prod(shape[:n_in]), rank),
                                      (rank, math.prod(shape[n_in:])))
  return out


def init(params: dict, names, rank: int, key, dtype=jnp.float32) -> dict:
  adapters = {}
  for i, targets in adapter_shapes(params, names, rank).items():
    adapters[i] = {}
    for name, (a_shape, b_shape) in targets.items():
      key, sub = jax.random.split(key)
      adapters[i][name] = {
          'a': jax.random.normal(sub, a_shape, dtype) / math.sqrt(a_shape[0]),
          'b': jnp.zeros(b_shape, dtype)}
  return adapters


def _replace_adapted(params: dict, adapters: dict, replace) -> dict:
  """A new params tree in which each adapted weight w becomes replace(w, ab, layer, index of
  the target within the layer); the base tree is unchanged."""
  layers = {}
  for i, layer in params['layers'].items():
    layer = {m: dict(v) if isinstance(v, dict) else v for m, v in layer.items()}
    for j, (name, ab) in enumerate(sorted(adapters.get(i, {}).items())):
      module, weight = name.split('.')
      layer[module][weight] = replace(layer[module][weight], ab, i, j)
    layers[i] = layer
  return {**params, 'layers': layers}


def merge(params: dict, adapters: dict, alpha: float, rank: int) -> dict:
  """Base params with every adapter folded in (a new tree; the base is unchanged)."""
  def fold(w, ab, i, j):
    delta = (ab['a'] @ ab['b']).reshape(w.shape) * (alpha / rank)
    return w + delta.astype(w.dtype)
  return _replace_adapted(params, adapters, fold)


class DroppedOutAdapter:
  """A base weight with its adapter kept apart, for LoRA dropout (merging cannot express it):
  x @ W + (alpha / rank) * dropout(x) @ A @ B, as PEFT computes it. It stands where the
  model reads the weight (`w[...]`, `w.astype(dt)`) and `model._matmul` applies it; it exists
  only inside the traced train step."""

  def __init__(self, w, a, b, scale: float, rate: float, key, dtype=None):
    self.w, self.a, self.b, self.scale, self.rate, self.key = w, a, b, scale, rate, key
    self.dtype = dtype or w.dtype
    self.shape = w.shape

  def __getitem__(self, index):
    assert index is Ellipsis, index
    return self

  def astype(self, dtype):
    return DroppedOutAdapter(self.w, self.a, self.b, self.scale, self.rate, self.key, dtype)

  def apply(self, x2d, preferred_element_type=None):
    """(rows, K) -> (rows, N): the base product plus the dropped-out adapter product."""
    dt = self.dtype
    y = jnp.dot(x2d, self.w.astype(dt).reshape(x2d.shape[1], -1),
                preferred_element_type=preferred_element_type)
    keep = jax.random.bernoulli(self.key, 1.0 - self.rate, x2d.shape)
    x_drop = jnp.where(keep, x2d / (1.0 - self.rate), 0).astype(dt)
    delta = (x_drop @ self.a.astype(dt)) @ self.b.astype(dt)
    return y + (self.scale * delta).astype(y.dtype)


def with_dropout(params: dict, adapters: dict, alpha: float, rank: int, rate: float,
                 key) -> dict:
  """Base params with each adapted weight replaced by a DroppedOutAdapter (one dropout key
  per layer and target)."""
  def wrap(w, ab, i, j):
    sub = jax.random.fold_in(jax.random.fold_in(key, int(i)), j)
    return DroppedOutAdapter(w, ab['a'], ab['b'], alpha / rank, rate, sub)
  return _replace_adapted(params, adapters, wrap)
