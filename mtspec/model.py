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


def rope(x_BTNH, positions_BT, theta: float):
  """Rotary embedding, rotate-half convention (as Hugging Face Llama and Qwen)."""
  half = x_BTNH.shape[-1] // 2
  freqs = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles_BTh = positions_BT[..., None].astype(jnp.float32) * freqs
  sin, cos = jnp.sin(angles_BTh)[:, :, None, :], jnp.cos(angles_BTh)[:, :, None, :]
  x1, x2 = jnp.split(x_BTNH.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BTNH.dtype)


def attention_mask(segment_ids_BT):
  """Causal mask that also keeps packed documents apart: (B, 1, T, S) booleans."""
  T = segment_ids_BT.shape[1]
  causal_TS = jnp.tril(jnp.ones((T, T), jnp.bool_))
  same_BTS = segment_ids_BT[:, :, None] == segment_ids_BT[:, None, :]
  return (same_BTS & causal_TS)[:, None]


class Attention(nnx.Module):

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
    self.cfg = cfg

  def __call__(self, x_BTD, positions_BT, mask_B1TS):
    cfg, dt = self.cfg, jnp.dtype(self.cfg.dtype)
    q_BTNH = jnp.einsum('btd,dnh->btnh', x_BTD, self.wq[...].astype(dt))
    k_BTKH = jnp.einsum('btd,dkh->btkh', x_BTD, self.wk[...].astype(dt))
    v_BTKH = jnp.einsum('btd,dkh->btkh', x_BTD, self.wv[...].astype(dt))
    if cfg.qkv_bias:
      q_BTNH += self.bq[...].astype(dt)
      k_BTKH += self.bk[...].astype(dt)
      v_BTKH += self.bv[...].astype(dt)
    if cfg.qk_norm:
      q_BTNH, k_BTKH = self.q_norm(q_BTNH), self.k_norm(k_BTKH)
    q_BTNH = rope(q_BTNH, positions_BT, cfg.rope_theta)
    k_BTKH = rope(k_BTKH, positions_BT, cfg.rope_theta)
    q_BTNH = sharding.constrain(q_BTNH, ('batch', 'seq', 'act_heads', None))
    k_BTKH = sharding.constrain(k_BTKH, ('batch', 'seq', 'act_kv_heads', None))
    if cfg.attention == 'cudnn':  # flash attention; assumes one document per row
      o_BTNH = jax.nn.dot_product_attention(q_BTNH, k_BTKH, v_BTKH, is_causal=True,
                                            implementation='cudnn')
    else:
      o_BTNH = jax.nn.dot_product_attention(q_BTNH, k_BTKH, v_BTKH, mask=mask_B1TS)
    return jnp.einsum('btnh,nhd->btd', o_BTNH, self.wo[...].astype(dt))


class MLP(nnx.Module):
  """SwiGLU."""

  def __init__(self, cfg, rngs: nnx.Rngs):
    D, F, pd = cfg.d_model, cfg.d_ff, jnp.dtype(cfg.param_dtype)
    self.w_gate = _param(rngs, (D, F), ('embed', 'mlp'), pd)
    self.w_up = _param(rngs, (D, F), ('embed', 'mlp'), pd)
    self.w_down = _param(rngs, (F, D), ('mlp', 'embed'), pd)
    self.dtype = jnp.dtype(cfg.dtype)

  def __call__(self, x_BTD):
    dt = self.dtype
    gate_BTF = jnp.einsum('btd,df->btf', x_BTD, self.w_gate[...].astype(dt))
    up_BTF = jnp.einsum('btd,df->btf', x_BTD, self.w_up[...].astype(dt))
    h_BTF = sharding.constrain(jax.nn.silu(gate_BTF) * up_BTF, ('batch', 'seq', 'act_mlp'))
    return jnp.einsum('btf,fd->btd', h_BTF, self.w_down[...].astype(dt))


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
    self.embed = _param(rngs, (cfg.vocab_size, cfg.d_model), ('vocab', 'embed'), pd,
                        scale=cfg.d_model ** -0.5)
    self.layers = nnx.List([Block(cfg, rngs) for _ in range(cfg.n_layers)])
    self.final_norm = RMSNorm(cfg.d_model, cfg.norm_eps, pd, rngs)
    if not cfg.tie_embeddings:
      self.lm_head = _param(rngs, (cfg.d_model, cfg.vocab_size), ('embed', 'vocab'), pd)
    self.cfg = cfg

  def __call__(self, tokens_BT, positions_BT=None, segment_ids_BT=None):
    """Returns float32 logits (B, T, V)."""
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
    x_BTD = self.final_norm(x_BTD)
    if cfg.tie_embeddings:
      logits_BTV = jnp.einsum('btd,vd->btv', x_BTD, self.embed[...].astype(dt),
                              preferred_element_type=jnp.float32)
    else:
      logits_BTV = jnp.einsum('btd,dv->btv', x_BTD, self.lm_head[...].astype(dt),
                              preferred_element_type=jnp.float32)
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
