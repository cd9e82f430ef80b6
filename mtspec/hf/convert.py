"""Hugging Face <-> mtspec: config mapping and the name/layout table, both directions.

A layout is a small einops-style pattern from the HF tensor to the mtspec parameter, e.g.
'(n h) d -> d n h' for q_proj.weight (N*H, D) -> wq (D, N, H). HF Llama/Qwen apply RoPE in the
rotate-half convention, like model.rope, so no head-dimension permutation is needed.
"""

import math
import re

from mtspec import config as config_lib
from mtspec import defaults
from mtspec.model import head_dim

ARCHITECTURES = {  # HF architecture -> model_type
  'LlamaForCausalLM': 'llama',
  'Qwen2ForCausalLM': 'qwen2',
  'Qwen3ForCausalLM': 'qwen3',
}


class HFConversionError(ValueError):
  pass


def architecture(hf: dict) -> str:
  archs = hf.get('architectures') or []
  for arch in archs:
    if arch in ARCHITECTURES:
      return arch
  raise HFConversionError(
    f'unsupported architecture {archs or hf.get("model_type")!r}; '
    f'supported: {", ".join(ARCHITECTURES)}'
  )


LLAMA3_ROPE_KEYS = (
  'factor',
  'low_freq_factor',
  'high_freq_factor',
  'original_max_position_embeddings',
)


def _rope(hf: dict) -> tuple[float, tuple]:
  """(theta, scaling): HF v5 nests RoPE settings in rope_parameters; older configs use
  rope_theta/rope_scaling. scaling is () or Llama 3.1's four 'llama3' numbers."""
  rope = hf.get('rope_parameters') or hf.get('rope_scaling') or {}
  kind = rope.get('rope_type', rope.get('type', 'default'))
  theta = float(rope.get('rope_theta', hf.get('rope_theta', 10_000.0)))
  if kind == 'llama3':
    return theta, tuple(float(rope[k]) for k in LLAMA3_ROPE_KEYS)
  if kind != 'default':
    raise HFConversionError(
      f'rope_type {kind!r} is not supported (model.rope implements '
      "'default' and Llama 3.1's 'llama3')"
    )
  return theta, ()


def _check_unsupported(hf: dict, arch: str):
  """Options that would change the math in ways model.py does not implement."""
  problems = {
    'hidden_act': hf.get('hidden_act', 'silu') != 'silu',
    'mlp_bias': bool(hf.get('mlp_bias')),
    # Llama/Qwen3 attention_bias also adds an o_proj bias, which mtspec lacks.
    'attention_bias': bool(hf.get('attention_bias')) and arch != 'Qwen2ForCausalLM',
    'use_sliding_window': bool(hf.get('use_sliding_window')),
    'layer_types': any(t != 'full_attention' for t in hf.get('layer_types') or ()),
  }
  bad = [f'{k}={hf.get(k)!r}' for k, is_bad in problems.items() if is_bad]
  if bad:
    raise HFConversionError(f'{arch}: unsupported config options {", ".join(bad)}')


def checkpoint_dtype(hf: dict) -> str:
  return {'bfloat16': 'bfloat16', 'float16': 'float16'}.get(
    str(hf.get('dtype') or hf.get('torch_dtype') or 'float32'), 'float32'
  )


def model_config(hf: dict, dtype: str | None = None, param_dtype: str | None = None):
  """HF config.json dict -> mtspec model ConfigDict (the same fields as configs/lm.py).

  dtype/param_dtype default to the checkpoint's dtype; pass param_dtype='float32' to train
  with float32 master weights from a bfloat16 checkpoint.
  """
  arch = architecture(hf)
  _check_unsupported(hf, arch)
  n_heads = hf['num_attention_heads']
  m = defaults.model_config('small')  # every field, then overwritten below
  m.update(
    vocab_size=hf['vocab_size'],
    d_model=hf['hidden_size'],
    n_layers=hf['num_hidden_layers'],
    n_heads=n_heads,
    n_kv_heads=hf.get('num_key_value_heads') or n_heads,
    head_dim=hf.get('head_dim') or hf['hidden_size'] // n_heads,
    d_ff=hf['intermediate_size'],
    rope_theta=_rope(hf)[0],
    rope_scaling=_rope(hf)[1],
    norm_eps=float(hf.get('rms_norm_eps', 1e-6)),
    tie_embeddings=bool(hf.get('tie_word_embeddings', False)),
    qkv_bias=arch == 'Qwen2ForCausalLM',
    qk_norm=arch == 'Qwen3ForCausalLM',
    dtype=dtype or checkpoint_dtype(hf),
    param_dtype=param_dtype or checkpoint_dtype(hf),
  )
  config_lib.validate_model(m)
  return m


def export_architecture(m) -> str:
  if m.qkv_bias and m.qk_norm:
    raise HFConversionError('no supported HF architecture has both qkv_bias and qk_norm')
  return (
    'Qwen2ForCausalLM' if m.qkv_bias else 'Qwen3ForCausalLM' if m.qk_norm else 'LlamaForCausalLM'
  )


def hf_config(m, base: dict | None = None, dtype: str | None = None) -> dict:
  """mtspec model ConfigDict -> HF config.json dict; keeps other keys of `base` (the import)."""
  arch = export_architecture(m)
  if base is not None and architecture(base) != arch:
    raise HFConversionError(
      f'the model is {arch}-shaped but the base config is {architecture(base)}'
    )
  hf = dict(
    base
    or {
      'bos_token_id': None,
      'eos_token_id': None,
      'max_position_embeddings': 4096,
      'initializer_range': 0.02,
    }
  )
  hf.pop('rope_scaling', None)
  hf.update(
    architectures=[arch],
    model_type=ARCHITECTURES[arch],
    vocab_size=m.vocab_size,
    hidden_size=m.d_model,
    intermediate_size=m.d_ff,
    num_hidden_layers=m.n_layers,
    num_attention_heads=m.n_heads,
    num_key_value_heads=m.n_kv_heads,
    head_dim=head_dim(m),
    hidden_act='silu',
    rms_norm_eps=m.norm_eps,
    tie_word_embeddings=bool(m.tie_embeddings),
    # Both spellings: transformers v5 reads rope_parameters, v4 reads rope_theta.
    rope_theta=m.rope_theta,
    rope_parameters=(
      {
        'rope_type': 'llama3',
        'rope_theta': m.rope_theta,
        **dict(zip(LLAMA3_ROPE_KEYS, m.rope_scaling)),
        'original_max_position_embeddings': int(m.rope_scaling[3]),
      }
      if m.rope_scaling
      else {'rope_type': 'default', 'rope_theta': m.rope_theta}
    ),
    dtype=dtype or m.param_dtype,
    torch_dtype=dtype or m.param_dtype,
  )
  if arch != 'Qwen2ForCausalLM':
    hf.update(attention_bias=False, mlp_bias=False)
  return hf


# mtspec parameter name (inside a layer for the second group) -> (HF name, HF -> mtspec layout)
_GLOBAL = {
  'embed': ('model.embed_tokens.weight', 'v d -> v d'),
  'lm_head': ('lm_head.weight', 'v d -> d v'),
  'final_norm.scale': ('model.norm.weight', 'd -> d'),
}
_LAYER = {
  'attn_norm.scale': ('input_layernorm.weight', 'd -> d'),
  'mlp_norm.scale': ('post_attention_layernorm.weight', 'd -> d'),
  'attn.wq': ('self_attn.q_proj.weight', '(n h) d -> d n h'),
  'attn.wk': ('self_attn.k_proj.weight', '(k h) d -> d k h'),
  'attn.wv': ('self_attn.v_proj.weight', '(k h) d -> d k h'),
  'attn.wo': ('self_attn.o_proj.weight', 'd (n h) -> n h d'),
  'attn.bq': ('self_attn.q_proj.bias', '(n h) -> n h'),
  'attn.bk': ('self_attn.k_proj.bias', '(k h) -> k h'),
  'attn.bv': ('self_attn.v_proj.bias', '(k h) -> k h'),
  'attn.q_norm.scale': ('self_attn.q_norm.weight', 'h -> h'),
  'attn.k_norm.scale': ('self_attn.k_norm.weight', 'h -> h'),
  'mlp.w_gate': ('mlp.gate_proj.weight', 'f d -> d f'),
  'mlp.w_up': ('mlp.up_proj.weight', 'f d -> d f'),
  'mlp.w_down': ('mlp.down_proj.weight', 'd f -> f d'),
}
# HF tensors that carry nothing mtspec needs (old checkpoints saved RoPE tables).
IGNORED_HF = re.compile(r'.*rotary_emb\.inv_freq')


def hf_tensor(name: str) -> tuple[str, str]:
  """mtspec dotted parameter name -> (HF tensor name, layout)."""
  layer = re.fullmatch(r'layers\.(\d+)\.(.+)', name)
  table, key = (_LAYER, layer[2]) if layer else (_GLOBAL, name)
  if key not in table:
    raise HFConversionError(f'mtspec parameter {name} has no Hugging Face counterpart')
  hf_name, layout = table[key]
  return (f'model.layers.{layer[1]}.{hf_name}' if layer else hf_name), layout


def _parse(layout: str):
  lhs, rhs = layout.split('->')
  groups = [a.split() if a else [b] for a, b in re.findall(r'\(([^)]*)\)|(\w)', lhs)]
  return groups, rhs.split()


def hf_shape(layout: str, shape_mt) -> tuple[int, ...]:
  groups, rhs = _parse(layout)
  size = dict(zip(rhs, shape_mt))
  return tuple(math.prod(size[c] for c in g) for g in groups)


def read_block(get, layout: str, shape_mt, index_mt):
  """Block `index_mt` (slices, step 1) of the mtspec tensor, reading only the HF rows it needs.

  `get(hf_index)` reads HF slices (a safetensors slice). Within a merged HF axis such as
  (n h), only the outer letter's range is narrowed; inner letters are sliced after reading.
  """
  groups, rhs = _parse(layout)
  size = dict(zip(rhs, shape_mt))
  sl = {c: range(*s.indices(size[c])) for c, s in zip(rhs, index_mt)}
  hf_index, split, inner_index = [], [], []
  for g in groups:
    inner = math.prod(size[c] for c in g[1:])
    outer = sl[g[0]]
    hf_index.append(slice(outer.start * inner, outer.stop * inner))
    split += [len(outer)] + [size[c] for c in g[1:]]
    inner_index += [slice(None)] + [slice(sl[c].start, sl[c].stop) for c in g[1:]]
  flat = [c for g in groups for c in g]
  block = get(tuple(hf_index)).reshape(split)[tuple(inner_index)]
  return block.transpose([flat.index(c) for c in rhs])


def to_hf(x_mt, layout: str):
  """mtspec-layout array -> HF-layout array (the inverse of read_block over the whole tensor)."""
  groups, rhs = _parse(layout)
  flat = [c for g in groups for c in g]
  return x_mt.transpose([rhs.index(c) for c in flat]).reshape(hf_shape(layout, x_mt.shape))
