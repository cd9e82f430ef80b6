"""Batched, jitted autoregressive sampling with a KV cache (greedy, temperature, top-p).

Prompts of different lengths are left-padded (pads have segment id 0 and are never attended
to), so every row's next token sits in the same column. Generation stops when every row has
emitted an end token or `max_new_tokens` are made; stop strings are cut on the host.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def _choose(logits_BV, key, temperature: float, top_p: float):
  if temperature == 0.0:
    return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
  logits_BV = logits_BV / temperature
  if top_p < 1.0:  # keep the smallest set of tokens whose probability reaches top_p
    sorted_BV = jnp.sort(logits_BV, axis=-1)[:, ::-1]
    cum_BV = jnp.cumsum(jax.nn.softmax(sorted_BV, axis=-1), axis=-1)
    cutoff_B = jnp.take_along_axis(
      sorted_BV, jnp.sum(cum_BV < top_p, axis=-1, keepdims=True), axis=-1
    )
    logits_BV = jnp.where(logits_BV < cutoff_B, -jnp.inf, logits_BV)
  return jax.random.categorical(key, logits_BV, axis=-1).astype(jnp.int32)


def _generate(
  graphdef, params, tokens_BP, seg_BP, end_ids, key, max_new: int, temperature: float, top_p: float
):
  model = nnx.merge(graphdef, params)
  B, P = tokens_BP.shape
  cache = model.init_cache(B, P + max_new)
  pos_BP = jnp.maximum(jnp.cumsum(seg_BP, axis=1) - 1, 0)
  logits_BPV, cache = model.decode(tokens_BP, pos_BP, seg_BP, cache)
  next_pos_B = pos_BP[:, -1] + 1
  key, sub = jax.random.split(key)
  first_B = _choose(logits_BPV[:, -1], sub, temperature, top_p)
  out_BN = jnp.zeros((B, max_new), jnp.int32).at[:, 0].set(first_B)
  done_B = jnp.isin(first_B, end_ids)

  def cond(carry):
    i, _, _, _, done_B, _ = carry
    return (i < max_new) & ~jnp.all(done_B)

  def body(carry):
    i, last_B, cache, out_BN, done_B, key = carry
    logits_B1V, cache = model.decode(
      last_B[:, None], (next_pos_B + i - 1)[:, None], jnp.ones((B, 1), jnp.int32), cache
    )
    key, sub = jax.random.split(key)
    tok_B = jnp.where(done_B, 0, _choose(logits_B1V[:, 0], sub, temperature, top_p))
    out_BN = out_BN.at[:, i].set(tok_B)
    return i + 1, tok_B, cache, out_BN, done_B | jnp.isin(tok_B, end_ids), key

  n, _, _, out_BN, _, _ = jax.lax.while_loop(cond, body, (1, first_B, cache, out_BN, done_B, key))
  return out_BN, n


_JITTED = {}


def _jitted(graphdef):
  """One compiled generator per model (graph definitions hold configs, which do not hash)."""
  if id(graphdef) not in _JITTED:
    _JITTED[id(graphdef)] = (
      graphdef,
      jax.jit(
        functools.partial(_generate, graphdef), static_argnames=('max_new', 'temperature', 'top_p')
      ),
    )
  return _JITTED[id(graphdef)][1]


def generate(
  graphdef,
  params,
  prompts,
  max_new_tokens: int,
  end_ids=(),
  temperature=0.0,
  top_p=1.0,
  seed: int = 0,
):
  """Token lists in, generated token lists out (each cut after its first end token)."""
  P = max(len(p) for p in prompts)
  tokens = np.zeros((len(prompts), P), np.int32)
  seg = np.zeros((len(prompts), P), np.int32)
  for r, p in enumerate(prompts):
    tokens[r, P - len(p) :], seg[r, P - len(p) :] = p, 1
  ends = jnp.asarray(list(end_ids) or [-1], jnp.int32)
  out, n = _jitted(graphdef)(
    params,
    jnp.asarray(tokens),
    jnp.asarray(seg),
    ends,
    jax.random.key(seed),
    max_new=max_new_tokens,
    temperature=float(temperature),
    top_p=float(top_p),
  )
  out = np.asarray(out)[:, : int(n)]
  result = []
  for row in out.tolist():
    cut = next((i + 1 for i, t in enumerate(row) if t in set(end_ids)), len(row))
    result.append(row[:cut])
  return result


def cut_at_stop_strings(text: str, stops) -> str:
  """The text up to the first stop string (the stop string itself removed)."""
  hits = [text.index(s) for s in stops if s in text]
  return text[: min(hits)] if hits else text
