"""Up-front config validation: every error names the key, before anything compiles."""

import jax

from mtspec import lora, phases, sharding
from mtspec.errors import ConfigError

DTYPES = ('float32', 'bfloat16', 'float16')


def _require(ok: bool, key: str, value, why: str):
  if not ok:
    raise ConfigError(f'config.{key}={value!r}: {why}')


def validate_model(m, prefix: str = 'model'):
  for key in ('vocab_size', 'd_model', 'n_layers', 'n_heads', 'n_kv_heads', 'd_ff'):
    _require(int(m[key]) > 0, f'{prefix}.{key}', m[key], 'must be a positive integer')
  if not m.head_dim:
    _require(
      m.d_model % m.n_heads == 0,
      f'{prefix}.n_heads',
      m.n_heads,
      f'must divide {prefix}.d_model={m.d_model} (or set {prefix}.head_dim)',
    )
  head_dim = m.head_dim or m.d_model // m.n_heads
  _require(head_dim % 2 == 0, f'{prefix}.head_dim', head_dim, 'must be even for RoPE')
  _require(
    m.n_heads % m.n_kv_heads == 0,
    f'{prefix}.n_kv_heads',
    m.n_kv_heads,
    f'must divide {prefix}.n_heads={m.n_heads}',
  )
  _require(m.dtype in DTYPES, f'{prefix}.dtype', m.dtype, f'expected one of {DTYPES}')
  _require(
    m.param_dtype in DTYPES, f'{prefix}.param_dtype', m.param_dtype, f'expected one of {DTYPES}'
  )
  _require(
    m.remat in ('none', 'full', 'dots'), f'{prefix}.remat', m.remat, 'expected none, full or dots'
  )
  _require(
    m.attention in ('xla', 'cudnn', 'cpu_chunked'),
    f'{prefix}.attention',
    m.attention,
    'expected xla, cudnn or cpu_chunked',
  )
  _require(m.rope_theta > 0, f'{prefix}.rope_theta', m.rope_theta, 'must be positive')
  scaling = tuple(m.get('rope_scaling', ()))
  _require(
    not scaling or (len(scaling) == 4 and scaling[0] > 0 and scaling[2] > scaling[1]),
    f'{prefix}.rope_scaling',
    scaling,
    'expected () or (factor, low_freq_factor, high_freq_factor, original_max_positions)',
  )


def validate_train(t, n_data_shards: int):
  for key in ('batch_size', 'seq_len', 'grad_accum', 'log_every', 'ckpt_every', 'keep_ckpts'):
    _require(int(t[key]) > 0, f'train.{key}', t[key], 'must be a positive integer')
  _require(
    t.batch_size % t.grad_accum == 0,
    'train.grad_accum',
    t.grad_accum,
    f'must divide train.batch_size={t.batch_size}',
  )
  micro = t.batch_size // t.grad_accum
  _require(
    micro % n_data_shards == 0,
    'train.batch_size',
    t.batch_size,
    f'each microbatch ({micro} rows) must split evenly over the {n_data_shards} '
    'data x fsdp shards of mesh.shape',
  )


def validate(cfg, n_devices: int | None = None):
  """Checks the whole config; returns the resolved mesh shape."""
  n_devices = jax.device_count() if n_devices is None else n_devices
  validate_model(cfg.model)
  try:
    shape = sharding.resolve_mesh_shape(cfg.mesh.shape, n_devices)
  except ValueError as e:
    raise ConfigError(f'config.mesh.shape: {e}') from None
  validate_train(cfg.train, shape[0] * shape[1])
  _require(
    cfg.init.mode in ('params', 'full'), 'init.mode', cfg.init.mode, 'expected params or full'
  )
  _require(cfg.data.block_size > 0, 'data.block_size', cfg.data.block_size, 'must be positive')
  if 'lora' in cfg and cfg.lora.rank > 0:
    _require(
      0 <= cfg.lora.dropout < 1,
      'lora.dropout',
      cfg.lora.dropout,
      'expected a probability in [0, 1)',
    )
    bad = [t for t in cfg.lora.targets if t not in lora.ALL_TARGETS]
    _require(
      not bad and cfg.lora.targets,
      'lora.targets',
      tuple(cfg.lora.targets),
      f'expected a non-empty subset of {lora.ALL_TARGETS}',
    )
    _require(cfg.lora.alpha > 0, 'lora.alpha', cfg.lora.alpha, 'must be positive')
  prof = tuple(cfg.get('profile_steps', ()))
  _require(
    not prof or (len(prof) == 2 and 0 <= prof[0] < prof[1]),
    'profile_steps',
    prof,
    'expected (first_step, last_step) with first < last, or () for none',
  )
  phases.plan(cfg)  # the phase plan validates its own keys
  _require(cfg.model.vocab_size >= 8, 'model.vocab_size', cfg.model.vocab_size, 'too small')
  return shape
