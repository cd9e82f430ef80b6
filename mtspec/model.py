"""Decoder-only transformer in Flax NNX (Llama / Qwen2 / Qwen3 family).

Every parameter carries `logical_axes` metadata; sharding.py maps those names to mesh axes.
Shape suffixes: B batch, T query length, S key length, D model width, N query heads,
K key/value heads, H head width, F MLP width, V vocabulary.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from mtspec import sharding


def _param(rngs: nnx.Rngs, shape, logical_axes, dtype, scale=None):
  """A Param initialised with a truncated normal of std 1/sqrt(fan_in) (or ones for norms)."""
  if scale == 'ones':
    value = jnp.ones(shape, dtype)
  elif scale == 'zeros':
    value = jnp.zeros(shape, dtype)
  else:
    std = scale if scale is not None else shape[0] ** -0.5
    value = std * jax.random.truncated_normal(rngs.params(), -2.0, 2.0, shape, dtype)
  return nnx.Param(value, logical_axes=tuple(logical_axes))


class RMSNorm(nnx.Module):
  def __init__(self, dim: int, eps: float, param_dtype, rngs: nnx.Rngs):
    self.scale = _param(rngs, (dim,), ('norm',), param_dtype, scale='ones')
    self.eps = eps

  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (y * self.scale[...].astype(jnp.float32)).astype(x.dtype)


def rope(x_BTNH, positions_BT, theta: float, scaling=()):
  """Rotary embedding, rotate-half convention (as Hugging Face Llama and Qwen).

  scaling: () or Llama 3.1's (factor, low_freq_factor, high_freq_factor, original_max_pos):
  long wavelengths are slowed by `factor`, short ones kept, the band between interpolated.
  """
  half = x_BTNH.shape[-1] // 2
  freqs = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
  if scaling:
    factor, low, high, old_len = scaling
    wavelen = 2 * jnp.pi / freqs
    scaled = jnp.where(wavelen > old_len / low, freqs / factor, freqs)
    smooth = (old_len / wavelen - low) / (high - low)
    between = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    freqs = jnp.where(between, (1 - smooth) * scaled / factor + smooth * scaled, scaled)
  angles_BTh = positions_BT[..., None].astype(jnp.float32) * freqs
  sin_BTh, cos_BTh = jnp.sin(angles_BTh), jnp.cos(angles_BTh)
  # [x1, x2] -> [x1 cos - x2 sin, x2 cos + x1 sin], written as x * [cos, cos] + flip(x) *
  # [-sin, sin] over a (2, H/2) split of the last axis: the same products and sums as the
  # split/concatenate form, in a shape that fuses into cheaper XLA:CPU loops.
  x_BTN2h = x_BTNH.astype(jnp.float32).reshape(x_BTNH.shape[:-1] + (2, half))
  cos_BT12h = jnp.stack([cos_BTh, cos_BTh], axis=-2)[:, :, None]
  sin_BT12h = jnp.stack([-sin_BTh, sin_BTh], axis=-2)[:, :, None]
  out = x_BTN2h * cos_BT12h + jnp.flip(x_BTN2h, axis=-2) * sin_BT12h
  return out.reshape(x_BTNH.shape).astype(x_BTNH.dtype)


def _matmul(x, w, n_contract: int = 1, preferred_element_type=None):
  """Contracts the last `n_contract` axes of x with the first `n_contract` axes of w.

  Written as one 2-D (rows x K) @ (K x N) matmul: XLA:CPU then keeps every dot of the forward
  and backward pass in a layout its GEMM library takes directly, where the equivalent 3-D
  einsums ('btd,dnh->btnh', ...) differentiate into dots that need large transposed copies of
  the activation gradients. Same math, same float32 results.
  """
  k_shape, n_shape = w.shape[:n_contract], w.shape[n_contract:]
  lead = x.shape[: x.ndim - n_contract]
  k = 1
  for d in k_shape:
    k *= d
  y = jnp.dot(x.reshape(-1, k), w.reshape(k, -1), preferred_element_type=preferred_element_type)
  return y.reshape(lead + n_shape)


def attention_mask(segment_ids_BT):
  """Causal mask that also keeps packed documents apart: (B, 1, T, S) booleans."""
  T = segment_ids_BT.shape[1]
  causal_TS = jnp.tril(jnp.ones((T, T), jnp.bool_))
  same_BTS = segment_ids_BT[:, :, None] == segment_ids_BT[:, None, :]
  return (same_BTS & causal_TS)[:, None]


def _xla_attention(q_BTNH, k_BSKH, v_BSKH, mask_B1TS):
  return jax.nn.dot_product_attention(q_BTNH, k_BSKH, v_BSKH, mask=mask_B1TS)


def _cudnn_attention(q_BTNH, k_BSKH, v_BSKH, mask_B1TS):
  del mask_B1TS  # flash attention is causal over the whole row: one document per row
  return jax.nn.dot_product_attention(
    q_BTNH, k_BSKH, v_BSKH, is_causal=True, implementation='cudnn'
  )


def attention_fn(kind: str):
  """The attention that config model.attention names: (q, k, v, mask) -> (B, T, N, H)."""
  if kind == 'cudnn':
    return _cudnn_attention
  if kind == 'cpu_chunked':
    from mtspec.cpu import attention  # imported only when selected: accelerators never need it

    return attention.masked_attention
  return _xla_attention


class Linears(nnx.Module):
  """A module whose weights meet the activations only through `linear`."""

  def linear(self, name: str, x, n_contract: int = 1):
    """x times the weight `name` in the compute dtype, contracting its first n_contract axes."""
    # Weights are applied only here, so module surgery can wrap the op without this file knowing.
    return _matmul(x, getattr(self, name)[...].astype(self.dtype), n_contract)


class Attention(Linears):
  def __init__(self, cfg, rngs: nnx.Rngs):
    D, N, K, H = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, head_dim(cfg)
    pd = jnp.dtype(cfg.param_dtype)
    self.wq = _param(rngs, (D, N, H), ('embed', 'heads', 'head_dim'), pd)
    self.wk = _param(rngs, (D, K, H), ('embed', 'kv_heads', 'head_dim'), pd)
    self.wv = _param(rngs, (D, K, H), ('embed', 'kv_heads', 'head_dim'), pd)
    self.wo = _param(rngs, (N, H, D), ('heads', 'head_dim', 'embed'), pd, scale=(N * H) ** -0.5)
    if cfg.qkv_bias:
      self.bq = _param(rngs, (N, H), ('heads', 'head_dim'), pd, scale='zeros')
      self.bk = _param(rngs, (K, H), ('kv_heads', 'head_dim'), pd, scale='zeros')
      self.bv = _param(rngs, (K, H), ('kv_heads', 'head_dim'), pd, scale='zeros')
    if cfg.qk_norm:
      self.q_norm = RMSNorm(H, cfg.norm_eps, pd, rngs)
      self.k_norm = RMSNorm(H, cfg.norm_eps, pd, rngs)
    self.cfg, self.dtype = cfg, jnp.dtype(cfg.dtype)

  def _qkv(self, x_BTD, positions_BT):
    """Queries, keys and values of x, with biases, norms and RoPE applied."""
    cfg, dt = self.cfg, self.dtype
    q_BTNH = self.linear('wq', x_BTD)
    k_BTKH = self.linear('wk', x_BTD)
    v_BTKH = self.linear('wv', x_BTD)
    if cfg.qkv_bias:
      q_BTNH += self.bq[...].astype(dt)
      k_BTKH += self.bk[...].astype(dt)
      v_BTKH += self.bv[...].astype(dt)
    if cfg.qk_norm:
      q_BTNH, k_BTKH = self.q_norm(q_BTNH), self.k_norm(k_BTKH)
    scaling = tuple(cfg.get('rope_scaling', ()))
    q_BTNH = rope(q_BTNH, positions_BT, cfg.rope_theta, scaling)
    k_BTKH = rope(k_BTKH, positions_BT, cfg.rope_theta, scaling)
    q_BTNH = sharding.constrain(q_BTNH, ('batch', 'seq', 'act_heads', None))
    k_BTKH = sharding.constrain(k_BTKH, ('batch', 'seq', 'act_kv_heads', None))
    return q_BTNH, k_BTKH, v_BTKH

  def __call__(self, x_BTD, positions_BT, mask_B1TS):
    q_BTNH, k_BTKH, v_BTKH = self._qkv(x_BTD, positions_BT)
    o_BTNH = attention_fn(self.cfg.attention)(q_BTNH, k_BTKH, v_BTKH, mask_B1TS)
    return self.linear('wo', o_BTNH, n_contract=2)

  def decode(self, x_BTD, positions_BT, mask_B1TS, cache):
    """Writes the new keys/values into `cache` ({'k', 'v': (B, S, K, H), 'index'}) at its
    index and attends to all of it; returns (output, updated cache)."""
    dt = self.dtype
    q_BTNH, k_BTKH, v_BTKH = self._qkv(x_BTD, positions_BT)
    at = (0, cache['index'], 0, 0)
    k_BSKH = jax.lax.dynamic_update_slice(cache['k'], k_BTKH.astype(cache['k'].dtype), at)
    v_BSKH = jax.lax.dynamic_update_slice(cache['v'], v_BTKH.astype(cache['v'].dtype), at)
    o_BTNH = jax.nn.dot_product_attention(
      q_BTNH, k_BSKH.astype(dt), v_BSKH.astype(dt), mask=mask_B1TS
    )
    return self.linear('wo', o_BTNH, n_contract=2), {**cache, 'k': k_BSKH, 'v': v_BSKH}


class MLP(Linears):
  """SwiGLU."""

  def __init__(self, cfg, rngs: nnx.Rngs):
    D, F, pd = cfg.d_model, cfg.d_ff, jnp.dtype(cfg.param_dtype)
    self.w_gate = _param(rngs, (D, F), ('embed', 'mlp'), pd)
    self.w_up = _param(rngs, (D, F), ('embed', 'mlp'), pd)
    self.w_down = _param(rngs, (F, D), ('mlp', 'embed'), pd)
    self.dtype = jnp.dtype(cfg.dtype)

  def __call__(self, x_BTD):
    gate_BTF = self.linear('w_gate', x_BTD)
    up_BTF = self.linear('w_up', x_BTD)
    h_BTF = sharding.constrain(jax.nn.silu(gate_BTF) * up_BTF, ('batch', 'seq', 'act_mlp'))
    return self.linear('w_down', h_BTF)


class Block(nnx.Module):
  def __init__(self, cfg, rngs: nnx.Rngs):
    pd = jnp.dtype(cfg.param_dtype)
    self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps, pd, rngs)
    self.attn = Attention(cfg, rngs)
    self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps, pd, rngs)
    self.mlp = MLP(cfg, rngs)

  def __call__(self, x_BTD, positions_BT, mask_B1TS):
    x_BTD = x_BTD + self.attn(self.attn_norm(x_BTD), positions_BT, mask_B1TS)
    x_BTD = x_BTD + self.mlp(self.mlp_norm(x_BTD))
    return sharding.constrain(x_BTD, ('batch', 'seq', 'act_embed'))

  def decode(self, x_BTD, positions_BT, mask_B1TS, cache):
    a_BTD, cache = self.attn.decode(self.attn_norm(x_BTD), positions_BT, mask_B1TS, cache)
    x_BTD = x_BTD + a_BTD
    return x_BTD + self.mlp(self.mlp_norm(x_BTD)), cache


REMAT_POLICIES = {
  'full': None,  # recompute everything in the backward pass
  'dots': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def _apply_block(block, x_BTD, positions_BT, mask_B1TS):
  return block(x_BTD, positions_BT, mask_B1TS)


class Transformer(nnx.Module):
  def __init__(self, cfg, rngs: nnx.Rngs):
    pd = jnp.dtype(cfg.param_dtype)
    # std 1/sqrt(D): with tied embeddings the output logits then start at unit scale.
    self.embed = _param(
      rngs, (cfg.vocab_size, cfg.d_model), ('vocab', 'embed'), pd, scale=cfg.d_model**-0.5
    )
    self.layers = nnx.List([Block(cfg, rngs) for _ in range(cfg.n_layers)])
    self.final_norm = RMSNorm(cfg.d_model, cfg.norm_eps, pd, rngs)
    if not cfg.tie_embeddings:
      self.lm_head = _param(rngs, (cfg.d_model, cfg.vocab_size), ('embed', 'vocab'), pd)
    self.cfg = cfg

  def __call__(self, tokens_BT, positions_BT=None, segment_ids_BT=None):
    """Float32 logits (B, T, V); packed documents (segment ids) never attend to each other."""
    cfg, dt = self.cfg, jnp.dtype(self.cfg.dtype)
    B, T = tokens_BT.shape
    if positions_BT is None:
      positions_BT = jnp.broadcast_to(jnp.arange(T), (B, T))
    if segment_ids_BT is None:
      segment_ids_BT = jnp.ones((B, T), jnp.int32)
    mask_B1TS = attention_mask(segment_ids_BT)
    x_BTD = jnp.take(self.embed[...], tokens_BT, axis=0).astype(dt)
    x_BTD = sharding.constrain(x_BTD, ('batch', 'seq', 'act_embed'))
    apply = _apply_block
    if cfg.remat != 'none':
      apply = nnx.remat(_apply_block, policy=REMAT_POLICIES[cfg.remat])
    for block in self.layers:
      x_BTD = apply(block, x_BTD, positions_BT, mask_B1TS)
    return self._logits(self.final_norm(x_BTD))

  def decode(self, tokens_BT, positions_BT, segment_ids_BT, cache):
    """Appends T tokens at cache['index'] (see init_cache); returns (float32 logits, new
    cache). Pads (segment id 0) are never attended to."""
    dt = jnp.dtype(self.cfg.dtype)
    T, S = tokens_BT.shape[1], cache['valid'].shape[1]
    index = cache['index']
    valid_BS = jax.lax.dynamic_update_slice(cache['valid'], segment_ids_BT != 0, (0, index))
    slot_T = index + jnp.arange(T)
    mask_B1TS = ((jnp.arange(S)[None, :] <= slot_T[:, None])[None] & valid_BS[:, None])[:, None]
    x_BTD = jnp.take(self.embed[...], tokens_BT, axis=0).astype(dt)
    layers = []
    for block, layer_cache in zip(self.layers, cache['layers']):
      x_BTD, layer_cache = block.decode(
        x_BTD, positions_BT, mask_B1TS, {**layer_cache, 'index': index}
      )
      layers.append({'k': layer_cache['k'], 'v': layer_cache['v']})
    logits_BTV = self._logits(self.final_norm(x_BTD))
    return logits_BTV, {'index': index + T, 'valid': valid_BS, 'layers': layers}

  def init_cache(self, batch: int, max_len: int, dtype=None) -> dict:
    H = head_dim(self.cfg)
    shape = (batch, max_len, self.cfg.n_kv_heads, H)
    dtype = dtype or jnp.dtype(self.cfg.dtype)
    return {
      'index': jnp.zeros((), jnp.int32),
      'valid': jnp.zeros((batch, max_len), jnp.bool_),
      'layers': [{'k': jnp.zeros(shape, dtype), 'v': jnp.zeros(shape, dtype)} for _ in self.layers],
    }

  def _logits(self, x_BTD):
    dt = jnp.dtype(self.cfg.dtype)
    w_DV = self.embed[...].astype(dt).T if self.cfg.tie_embeddings else self.lm_head[...].astype(dt)
    logits_BTV = _matmul(x_BTD, w_DV, preferred_element_type=jnp.float32)
    return sharding.constrain(logits_BTV, ('batch', 'seq', 'act_vocab'))


def head_dim(cfg) -> int:
  return cfg.head_dim or cfg.d_model // cfg.n_heads


def param_count(cfg) -> int:
  """Counts parameters from shapes alone (jax.eval_shape: no memory used)."""
  abstract = nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0)))
  leaves = jax.tree.leaves(nnx.state(abstract, nnx.Param))
  return sum(int(x.size) for x in leaves)


def flops_per_token(cfg, seq_len: int) -> float:
  """Training FLOPs per token: 6 x matmul params (lm head included) + attention scores."""
  H = head_dim(cfg)
  per_layer = cfg.d_model * H * (2 * cfg.n_heads + 2 * cfg.n_kv_heads) + 3 * cfg.d_model * cfg.d_ff
  matmul_params = cfg.n_layers * per_layer + cfg.d_model * cfg.vocab_size
  attention = 12 * cfg.n_layers * cfg.n_heads * H * seq_len
  return 6 * matmul_params + attention
