r"""Language-model training on the built-in corpus (the foundation job), one phase.

Run:
  python -m mtspec.main --config=configs/lm.py:small --workdir=/tmp/mtspec_lm
Variants (after the colon): tiny (tests), small (CPU benchmark shape, ~10.2M params),
llama3_1b, llama3_8b and qwen3_32b (full-size shapes of the published models).
Override any key: --config.phases.train.steps=100 --config.mesh.shape="(1,-1,1)"
Other configs build on `base_config` (model, mesh, data, train, init) and add sources/phases.
"""
import ml_collections

from mtspec.phases import new_phase


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
  m.attention = 'xla'  # xla | cudnn (GPU flash attention; packed segments need xla)
  if variant == 'tiny':
    m.update(vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=128)
  elif variant == 'small':
    pass
  elif variant == 'llama3_1b':  # the Llama-3.2-1B shape: the GPU benchmark model
    m.update(vocab_size=128_256, d_model=2048, n_layers=16, n_heads=32, n_kv_heads=8,
             d_ff=8192, rope_theta=500_000.0, tie_embeddings=True, dtype='bfloat16')
  elif variant == 'llama3_8b':
    m.update(vocab_size=128_256, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8,
             d_ff=14_336, rope_theta=500_000.0, tie_embeddings=False, dtype='bfloat16',
             rope_scaling=(8.0, 1.0, 4.0, 8192.0))
  elif variant == 'qwen3_32b':
    m.update(vocab_size=151_936, d_model=5120, n_layers=64, n_heads=64, n_kv_heads=8,
             head_dim=128, d_ff=25_600, rope_theta=1_000_000.0, norm_eps=1e-6,
             tie_embeddings=False, qk_norm=True, dtype='bfloat16')
  else:
    raise ValueError(f'unknown model variant {variant!r} '
                     '(expected tiny, small, llama3_1b, llama3_8b or qwen3_32b)')
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


def get_config(variant: str = 'small') -> ml_collections.ConfigDict:
  c = base_config(variant)
  c.sources.web = ml_collections.ConfigDict(dict(uri='builtin', kind='text', text_key='text'))
  new_phase(c, 'train', steps=120, weights={'web': 1.0}, lr=3e-3, warmup_steps=12)
  c.phase_order = ('train',)
  if variant == 'tiny':
    c.sources.web.uri = 'builtin:2000'
    c.phases.train.update(steps=40, warmup_steps=5)
    c.train.update(batch_size=8, seq_len=64, log_every=5, ckpt_every=20)
  return c
