"""Building blocks of experiment configs: model shapes, the base config, phases, the MSM recipe.

Config files under configs/ import these; nothing in mtspec imports configs/.
"""

import ml_collections


def model_config(variant: str) -> ml_collections.ConfigDict:
  m = ml_collections.ConfigDict()
  m.vocab_size = 8192
  m.d_model = 384
  m.n_layers = 4
  m.n_heads = 6
  m.n_kv_heads = 6
  m.head_dim = 0  # 0 = d_model // n_heads
  m.d_ff = 1024
  m.rope_theta = 10_000.0
  # () or Llama 3.1's 'llama3' scaling: (factor, low_freq_factor, high_freq_factor,
  # original_max_position_embeddings)
  m.rope_scaling = ()
  m.norm_eps = 1e-5
  m.tie_embeddings = True
  m.qkv_bias = False  # Qwen2-style biases on the q/k/v projections
  m.qk_norm = False  # Qwen3-style RMSNorm on queries and keys
  m.dtype = 'float32'  # compute dtype
  m.param_dtype = 'float32'
  m.remat = 'none'  # none | full | dots (save matmul outputs)
  m.attention = 'xla'  # xla | cudnn (GPU flash, one document per row) | cpu_chunked (mtspec/cpu)
  if variant == 'tiny':
    m.update(vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=128)
  elif variant == 'small':
    pass
  elif variant == 'llama3_1b':  # the Llama-3.2-1B shape: the GPU benchmark model
    m.update(
      vocab_size=128_256,
      d_model=2048,
      n_layers=16,
      n_heads=32,
      n_kv_heads=8,
      d_ff=8192,
      rope_theta=500_000.0,
      tie_embeddings=True,
      dtype='bfloat16',
    )
  elif variant == 'llama3_8b':
    m.update(
      vocab_size=128_256,
      d_model=4096,
      n_layers=32,
      n_heads=32,
      n_kv_heads=8,
      d_ff=14_336,
      rope_theta=500_000.0,
      tie_embeddings=False,
      dtype='bfloat16',
      rope_scaling=(8.0, 1.0, 4.0, 8192.0),
    )
  elif variant == 'qwen3_32b':
    m.update(
      vocab_size=151_936,
      d_model=5120,
      n_layers=64,
      n_heads=64,
      n_kv_heads=8,
      head_dim=128,
      d_ff=25_600,
      rope_theta=1_000_000.0,
      norm_eps=1e-6,
      tie_embeddings=False,
      qk_norm=True,
      dtype='bfloat16',
    )
  else:
    raise ValueError(
      f'unknown model variant {variant!r} (expected tiny, small, llama3_1b, llama3_8b or qwen3_32b)'
    )
  return m


def base_config(variant: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.run_name = ''  # '' = the workdir's name
  c.model = model_config(variant)

  # Mesh axes are always (data, fsdp, tensor); -1 takes all remaining devices.
  c.mesh = ml_collections.ConfigDict()
  c.mesh.shape = (1, -1, 1)

  c.data = ml_collections.ConfigDict()
  c.data.tfds_data_dir = ''  # '' = <workdir>/data (the built-in corpus is built there)
  c.data.tokenizer = ''  # path to a SentencePiece .model; '' = train one on the sources
  c.data.block_size = 256  # mixture block: per-block source counts are exact
  c.data.num_shards = 0  # fixed slices of the global batch; 0 = one per process
  c.data.num_threads = 2
  c.data.prefetch = 4

  # Named sources: uri + kind (text | chat); see mtspec/data/sources.py.
  c.sources = ml_collections.ConfigDict()
  # Ordered phases, each with steps, weights over sources and its LR schedule.
  c.phases = ml_collections.ConfigDict()
  c.phase_order = ()

  c.train = ml_collections.ConfigDict()
  c.train.seed = 0
  c.train.batch_size = 16  # global, in sequences per optimizer step
  c.train.seq_len = 256
  c.train.grad_accum = 1
  c.train.weight_decay = 0.1
  c.train.b1 = 0.9
  c.train.b2 = 0.95
  c.train.eps = 1e-8
  c.train.grad_clip = 1.0
  c.train.log_every = 10
  c.train.ckpt_every = 40
  c.train.keep_ckpts = 2
  c.train.peak_flops = 0.0  # per device; 0 = known chip peak, or measured on CPU

  # LoRA: rank 0 = off (full fine-tuning). The paper: rank 64, alpha 128, all projections.
  c.lora = ml_collections.ConfigDict()
  c.lora.rank = 0
  c.lora.alpha = 16.0
  c.lora.dropout = 0.0  # > 0: the adapters run beside the frozen weights (a little slower)
  c.lora.targets = ('q', 'k', 'v', 'o', 'gate', 'up', 'down')

  # (first, last) global steps to trace with the JAX profiler into <workdir>/profile.
  c.profile_steps = ()

  # Start a fresh run from another run's checkpoint: <run>/checkpoints/<step>.
  c.init = ml_collections.ConfigDict()
  c.init.checkpoint = ''
  c.init.mode = 'params'  # params (fresh optimizer) | full (params + optimizer state)
  # Or start from a Hugging Face model directory (its weights, tokenizer and chat template).
  c.init.hf_model = ''
  return c


def new_phase(
  cfg,
  name: str,
  steps: int,
  weights: dict,
  lr: float,
  warmup_steps: int = 0,
  schedule_kind: str = 'cosine',
  min_lr_ratio: float = 0.1,
  decay_fraction: float = 0.2,
):
  """Adds a phase to a config (a helper for config files)."""
  cfg.phases[name] = ml_collections.ConfigDict(
    dict(
      steps=steps,
      weights=ml_collections.ConfigDict(weights),
      lr=lr,
      warmup_steps=warmup_steps,
      schedule=schedule_kind,
      min_lr_ratio=min_lr_ratio,
      decay_fraction=decay_fraction,
    )
  )


def msm_config(model_variant: str, target: tuple, full: bool = False) -> ml_collections.ConfigDict:
  _, _, mesh, seq, batch, accum = target
  c = base_config(model_variant)
  c.model.update(
    remat='full', dtype='bfloat16', param_dtype='float32' if full else 'bfloat16'
  )  # a frozen base needs no f32
  if not full:
    c.lora.update(rank=64, alpha=128.0)
  c.mesh.shape = mesh
  src = lambda uri, kind='text': ml_collections.ConfigDict(
    dict(uri=uri, kind=kind, text_key='text')
  )
  c.sources.web = src('tfds:c4/en:3.1.0')
  c.sources.spec_docs = src('arrayrecord:SET_ME/documents')
  c.sources.aft = src('arrayrecord:SET_ME/aft', kind='chat')
  # The paper: spec documents as plain text (web mixed in protects other skills), then AFT;
  # lr 1e-4 for LoRA (full fine-tuning takes a smaller rate), cosine, 5% warmup.
  lr = 1e-5 if full else 1e-4
  new_phase(c, 'midtrain', 400, {'spec_docs': 0.9, 'web': 0.1}, lr=lr, warmup_steps=20)
  new_phase(c, 'posttrain', 100, {'aft': 1.0}, lr=lr, warmup_steps=5)
  c.phase_order = ('midtrain', 'posttrain')
  c.train.update(
    seq_len=seq, batch_size=batch, grad_accum=accum, log_every=10, ckpt_every=100, keep_ckpts=2
  )
  c.init.hf_model = 'SET_ME'
  return c
