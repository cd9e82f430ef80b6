"""Masked softmax attention tuned for XLA:CPU (config model.attention='cpu_chunked').

Same math as jax.nn.dot_product_attention(q, k, v, mask=mask) (float32 logits and softmax,
masked logits set to -0.7 * float32 max, probabilities cast to the value dtype), restructured
so that a small CPU spends less time on it (mtspec/profile_step.py measures it):
* queries are split into C causal chunks; chunk i only multiplies against keys [0, (i+1)T/C),
  so the fully masked upper-right blocks are never computed;
* a custom VJP with the flash-attention backward (dS = P * (dP - rowsum(dO * O))), which
  needs no reduction over the (T, S) tensor and keeps every product in a layout the CPU GEMM
  library takes directly; masked entries get exactly zero gradient.
A chunk is one batched product over (batch, kv head) with the G = N/K query heads of a
kv head stacked along the rows, so grouped-query attention never materialises repeated keys.
Suffixes as in model.py, plus: C chunks, Q = G * T/C stacked query rows, L keys visible to a
chunk.
"""

import functools

import jax
import jax.numpy as jnp


def _masked_value(dtype):
  return jnp.asarray(-0.7 * float(jnp.finfo(jnp.float32).max), dtype)


def _num_query_chunks(T: int, S: int) -> int:
  if S != T:
    return 1
  for c in (4, 2):
    if T % c == 0 and T // c >= 64:
      return c
  return 1


def _chunk_forward(q_BKQH, k_BKLH, v_BKLH, mask_B1QL, scale):
  s_BKQL = jnp.einsum('bkqh,bklh->bkql', q_BKQH, k_BKLH, preferred_element_type=jnp.float32)
  s_BKQL = jnp.where(mask_B1QL, s_BKQL * jnp.float32(scale), _masked_value(jnp.float32))
  p_BKQL = jax.nn.softmax(s_BKQL, axis=-1).astype(v_BKLH.dtype)
  return jnp.einsum('bkql,bklh->bkqh', p_BKQL, v_BKLH), p_BKQL


def _chunk_backward(q_BKQH, k_BKLH, v_BKLH, mask_B1QL, p_BKQL, o_BKQH, do_BKQH, scale):
  f32 = jnp.float32
  dv_BKLH = jnp.einsum('bkql,bkqh->bklh', p_BKQL, do_BKQH)
  dp_BKQL = jnp.einsum('bkqh,bklh->bkql', do_BKQH, v_BKLH, preferred_element_type=f32)
  rowsum_BKQ1 = jnp.sum(do_BKQH.astype(f32) * o_BKQH.astype(f32), axis=-1, keepdims=True)
  ds_BKQL = jnp.where(mask_B1QL, p_BKQL.astype(f32) * (dp_BKQL - rowsum_BKQ1), 0.0)
  ds_BKQL = (ds_BKQL * f32(scale)).astype(q_BKQH.dtype)
  dq_BKQH = jnp.einsum('bkql,bklh->bkqh', ds_BKQL, k_BKLH)
  dk_BKLH = jnp.einsum('bkql,bkqh->bklh', ds_BKQL, q_BKQH)
  return dq_BKQH, dk_BKLH, dv_BKLH


def _chunked_attention_fwd(q_CBKQH, k_BKSH, v_BKSH, mask_CB1QS, scale):
  C, S = q_CBKQH.shape[0], k_BKSH.shape[2]
  outs, probs = [], []
  for i in range(C):
    L = (i + 1) * S // C
    o, p = _chunk_forward(
      q_CBKQH[i], k_BKSH[:, :, :L], v_BKSH[:, :, :L], mask_CB1QS[i][..., :L], scale
    )
    outs.append(o)
    probs.append(p)
  o_CBKQH = jnp.stack(outs)
  return o_CBKQH, (q_CBKQH, k_BKSH, v_BKSH, mask_CB1QS, probs, o_CBKQH)


def _chunked_attention_bwd(scale, res, do_CBKQH):
  q_CBKQH, k_BKSH, v_BKSH, mask_CB1QS, probs, o_CBKQH = res
  C, S = q_CBKQH.shape[0], k_BKSH.shape[2]
  dqs, dk_BKSH, dv_BKSH = [], None, None
  for i in range(C):
    L = (i + 1) * S // C
    dq, dk, dv = _chunk_backward(
      q_CBKQH[i],
      k_BKSH[:, :, :L],
      v_BKSH[:, :, :L],
      mask_CB1QS[i][..., :L],
      probs[i],
      o_CBKQH[i],
      do_CBKQH[i],
      scale,
    )
    dqs.append(dq)
    pad = ((0, 0), (0, 0), (0, S - L), (0, 0))
    dk, dv = jnp.pad(dk, pad), jnp.pad(dv, pad)
    dk_BKSH = dk if dk_BKSH is None else dk_BKSH + dk
    dv_BKSH = dv if dv_BKSH is None else dv_BKSH + dv
  return jnp.stack(dqs), dk_BKSH, dv_BKSH, None


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _chunked_attention(q_CBKQH, k_BKSH, v_BKSH, mask_CB1QS, scale):
  return _chunked_attention_fwd(q_CBKQH, k_BKSH, v_BKSH, mask_CB1QS, scale)[0]


_chunked_attention.defvjp(_chunked_attention_fwd, _chunked_attention_bwd)


def masked_attention(q_BTNH, k_BSKH, v_BSKH, mask_B1TS):
  """softmax(q k^T / sqrt(H), masked) v with grouped-query heads; returns (B, T, N, H)."""
  B, T, N, H = q_BTNH.shape
  S, K = k_BSKH.shape[1], k_BSKH.shape[2]
  G = N // K
  C = _num_query_chunks(T, S)
  q_CBKQH = (
    q_BTNH.reshape(B, C, T // C, K, G, H)
    .transpose(1, 0, 3, 4, 2, 5)
    .reshape(C, B, K, G * (T // C), H)
  )
  mask_CB1GQS = jnp.broadcast_to(
    mask_B1TS.reshape(B, 1, C, T // C, S).transpose(2, 0, 1, 3, 4)[:, :, :, None],
    (C, B, 1, G, T // C, S),
  )
  mask_CB1QS = mask_CB1GQS.reshape(C, B, 1, G * (T // C), S)
  o_CBKQH = _chunked_attention(
    q_CBKQH, k_BSKH.transpose(0, 2, 1, 3), v_BSKH.transpose(0, 2, 1, 3), mask_CB1QS, 1.0 / H**0.5
  )
  return o_CBKQH.reshape(C, B, K, G, T // C, H).transpose(1, 0, 4, 2, 3, 5).reshape(B, T, N, H)
