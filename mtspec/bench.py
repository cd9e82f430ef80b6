"""Benchmark: train-step throughput and MFU, optionally beside transformers + torch.

  python -m mtspec.bench                 # small shape, seq 256, batch 16, float32
  python -m mtspec.bench --torch         # + LlamaForCausalLM / torch AdamW on the same shape
  python -m mtspec.bench --dtype=bfloat16
  # GPU: a ~1.2B model, bf16 compute, cuDNN flash attention, against the chip's bf16 peak
  python -m mtspec.bench --variant=llama3_1b --seq=2048 --batch=8 --dtype=bfloat16 \
      --attention=cudnn --torch

Prints a table, then one JSON line with tokens_per_second, mfu and peak_flops.
"""

import argparse
import json
import subprocess
import sys
import time

import jax
import numpy as np

from mtspec import defaults, metrics, optim, sharding, train_state
from mtspec import model as model_lib
from mtspec import step as step_lib


def synthetic_batch(vocab: int, batch: int, seq: int, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  tokens = rng.integers(4, vocab, (batch, seq + 1), dtype=np.int32)
  ones = np.ones((batch, seq), np.int32)
  return {
    'tokens': tokens[:, :-1],
    'targets': tokens[:, 1:],
    'segment_ids': ones,
    'positions': np.broadcast_to(np.arange(seq, dtype=np.int32), (batch, seq)).copy(),
    'loss_weights': ones.astype(np.float32),
  }


def time_steps(run_step, n_warmup: int, n_steps: int) -> float:
  """Seconds per step, after warm-up (compilation) steps."""
  for _ in range(n_warmup):
    run_step()
  t = time.perf_counter()
  for _ in range(n_steps):
    run_step()
  return (time.perf_counter() - t) / n_steps


def build_step(cfg):
  """(train step, fresh state, one synthetic global batch, mesh) for cfg's shape."""
  t = cfg.train
  mesh = sharding.make_mesh(cfg.mesh.shape)
  schedule = optim.lr_schedule(1e-3, 1000, 10, 'cosine', 0.1)
  opt = optim.make_optimizer(t, schedule)
  shapes = train_state.model_shapes(cfg.model)
  shards = train_state.state_shardings(mesh, opt, shapes)
  state = train_state.init_state(cfg.model, opt, 0, shards)
  step = step_lib.make_train_step(shapes.graphdef, opt, schedule, t.grad_accum, shards, mesh)
  batch = sharding.to_global(synthetic_batch(cfg.model.vocab_size, t.batch_size, t.seq_len), mesh)
  return step, state, batch, mesh


def bench_mtspec(cfg, n_warmup: int, n_steps: int) -> float:
  step, state, batch, _ = build_step(cfg)
  state = [state]

  def run():
    state[0], m = step(state[0], batch)
    jax.block_until_ready(m['loss'])

  return time_steps(run, n_warmup, n_steps)


def _llama_config(m, **extra):
  """The transformers LlamaConfig of the same shape as config.model m."""
  import transformers

  return transformers.LlamaConfig(
    vocab_size=m.vocab_size,
    hidden_size=m.d_model,
    intermediate_size=m.d_ff,
    num_hidden_layers=m.n_layers,
    num_attention_heads=m.n_heads,
    num_key_value_heads=m.n_kv_heads,
    tie_word_embeddings=m.tie_embeddings,
    rope_theta=m.rope_theta,
    **extra,
  )


def bench_torch(cfg, n_warmup: int, n_steps: int) -> float:
  """LlamaForCausalLM, float32 master weights; on a GPU bf16 autocast + SDPA (flash)."""
  import contextlib

  import torch
  import transformers

  m, t = cfg.model, cfg.train
  torch.manual_seed(0)
  cuda = torch.cuda.is_available()
  hf_cfg = _llama_config(m, max_position_embeddings=t.seq_len, attn_implementation='sdpa')
  device = 'cuda' if cuda else 'cpu'
  model = transformers.LlamaForCausalLM(hf_cfg).float().to(device).train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=t.weight_decay, fused=cuda)
  ids = torch.randint(4, m.vocab_size, (t.batch_size, t.seq_len), device=device)
  autocast = (
    torch.autocast('cuda', dtype=torch.bfloat16)
    if cuda and m.dtype == 'bfloat16'
    else contextlib.nullcontext()
  )

  def run():
    with autocast:
      loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if cuda:
      torch.cuda.synchronize()

  return time_steps(run, n_warmup, n_steps)


def bench_data(cfg, n_batches: int) -> dict:
  """The mixed, packed pipeline alone: tokens/s delivered, and the cost of a phase switch."""
  import tempfile

  with tempfile.TemporaryDirectory(prefix='mtspec_bench_') as tmp:
    return _bench_data_in(cfg, n_batches, tmp)


def _bench_data_in(cfg, n_batches: int, tmp: str) -> dict:
  import ml_collections

  from mtspec.data import chat, pipeline, sources, tokenizer

  t = cfg.train
  src = lambda uri: ml_collections.ConfigDict(dict(uri=uri, kind='text', text_key='text'))
  srcs = {
    'web': sources.open_source('web', src('builtin'), tmp),
    'spec': sources.open_source('spec', src('builtin:2000'), tmp),
  }
  texts = (srcs['web'][i]['text'] for i in range(5000))
  tok = tokenizer.train(
    texts, cfg.model.vocab_size, f'{tmp}/tok.model', special_tokens=chat.SPECIAL_TOKENS
  )

  def phase_iter(name, weights):
    return iter(
      pipeline.phase_batches(
        srcs, weights, tok, 0, name, t.seq_len, t.batch_size, cfg.data.block_size
      )[1]
    )

  it = phase_iter('pretrain', {'web': 1.0})
  next(it)
  start = time.perf_counter()
  for _ in range(n_batches):
    next(it)
  per_batch = (time.perf_counter() - start) / n_batches
  start = time.perf_counter()
  next(phase_iter('midtrain', {'web': 0.5, 'spec': 0.5}))  # what the trainer does at a boundary
  switch = time.perf_counter() - start
  return {
    'data_tokens_per_second': t.batch_size * t.seq_len / per_batch,
    'phase_switch_seconds': switch,
  }


def bench_sampling(
  cfg, batches=(1, 16), prompt_len: int = 32, new_tokens: int = 128, with_torch: bool = False
) -> list:
  """Greedy generation tokens/s (new tokens over wall time) with the KV cache."""
  from mtspec import sample

  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  shapes = train_state.model_shapes(cfg.model)
  params = train_state.init_params(cfg.model, 0, train_state.param_shardings(mesh, shapes))
  rows = []
  for b in batches:
    prompts = np.random.default_rng(b).integers(4, cfg.model.vocab_size, (b, prompt_len)).tolist()
    sample.generate(shapes.graphdef, params, prompts, new_tokens)  # compile
    t = time.perf_counter()
    out = sample.generate(shapes.graphdef, params, prompts, new_tokens)
    rows.append((f'mtspec sample (batch {b})', sum(map(len, out)) / (time.perf_counter() - t)))
    if with_torch:
      rows.append((f'transformers generate (batch {b})', _torch_generate(cfg, prompts, new_tokens)))
  return rows


def _torch_generate(cfg, prompts, new_tokens) -> float:
  import torch
  import transformers

  m = cfg.model
  model = transformers.LlamaForCausalLM(_llama_config(m)).eval()
  ids = torch.tensor(prompts)
  kwargs = dict(
    max_new_tokens=new_tokens,
    min_new_tokens=new_tokens,
    do_sample=False,
    eos_token_id=None,
    pad_token_id=0,
  )
  with torch.no_grad():
    model.generate(ids, **kwargs)
    t = time.perf_counter()
    out = model.generate(ids, **kwargs)
  return (out.shape[1] - ids.shape[1]) * ids.shape[0] / (time.perf_counter() - t)


def torch_in_subprocess(args) -> tuple:
  """(row name, s/step) of `--only-torch` run in its own process, under torch's usual
  allocator: the huge-page malloc setting that speeds up XLA:CPU slows torch's CPU steps
  (README.md, Benchmark)."""
  from mtspec.cpu import hugepages

  cmd = [
    sys.executable,
    '-m',
    'mtspec.bench',
    '--only-torch',
    f'--variant={args.variant}',
    f'--seq={args.seq}',
    f'--batch={args.batch}',
    f'--dtype={args.dtype}',
    f'--warmup={args.warmup}',
    f'--steps={args.steps}',
  ]
  out = subprocess.run(cmd, env=hugepages.env_without_tunable(), capture_output=True, text=True)
  if out.returncode != 0:
    raise RuntimeError(f'torch benchmark failed ({" ".join(cmd)}):\n{out.stderr[-3000:]}')
  row = next(line for line in out.stdout.splitlines() if line.startswith('| transformers'))
  name, sec = [c.strip() for c in row.strip('|').split('|')][:2]
  return name, float(sec)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--variant', default='small')
  p.add_argument('--seq', type=int, default=256)
  p.add_argument('--batch', type=int, default=16)
  p.add_argument('--dtype', default='float32')
  p.add_argument('--warmup', type=int, default=2)
  p.add_argument('--steps', type=int, default=8)
  p.add_argument(
    '--attention',
    default='',
    help='xla | cudnn (GPU flash attention) | cpu_chunked (the CPU-tuned kernel); '
    'default: cpu_chunked on a CPU, else xla',
  )
  p.add_argument('--remat', default='none', help='none | dots | full')
  p.add_argument('--torch', action='store_true', help='also time transformers + torch')
  p.add_argument(
    '--only-torch',
    action='store_true',
    help='time only transformers + torch (a separate process from JAX on a GPU)',
  )
  p.add_argument(
    '--sampling',
    action='store_true',
    help='also time greedy generation at batch 1 and 16 (with --torch: beside '
    'transformers generate)',
  )
  p.add_argument(
    '--data-batches', type=int, default=50, help='batches to time the data pipeline over (0 = skip)'
  )
  args = p.parse_args()

  cfg = defaults.base_config(args.variant)
  cfg.train.update(seq_len=args.seq, batch_size=args.batch)
  on_cpu = jax.devices()[0].platform == 'cpu'
  args.attention = args.attention or ('cpu_chunked' if on_cpu else 'xla')
  cfg.model.update(dtype=args.dtype, attention=args.attention, remat=args.remat)
  tokens = args.batch * args.seq
  # CPU: this machine's measured float32 matmul rate; accelerators: the chip's dense peak.
  peak = (
    metrics.measure_matmul_peak('float32')
    if on_cpu
    else metrics.peak_flops_per_device(args.dtype)[0]
  )
  flops_tok = model_lib.flops_per_token(cfg.model, args.seq)
  rows = []
  if not args.only_torch:
    sec = bench_mtspec(cfg, args.warmup, args.steps)
    rows.append((f'mtspec (jax {jax.__version__}, {args.dtype})', sec))
  if args.only_torch:
    import torch

    on_gpu = torch.cuda.is_available()
    mode = 'f32 weights, bf16 autocast' if on_gpu and args.dtype == 'bfloat16' else 'float32'
    rows.append(
      (
        f'transformers + torch {torch.__version__} ({mode})',
        bench_torch(cfg, args.warmup, args.steps),
      )
    )
  elif args.torch:
    rows.append(torch_in_subprocess(args))

  n_params = model_lib.param_count(cfg.model)
  peak_text = (
    f'measured float32 matmul peak {peak / 1e9:.1f} GFLOP/s'
    if on_cpu
    else f'{args.dtype} peak {peak / 1e12:.0f} TFLOP/s (spec sheet), measured matmul '
    f'{metrics.measure_matmul_peak(args.dtype, n=8192) / 1e12:.0f} TFLOP/s'
  )
  print(
    f'\n{args.variant}: {n_params / 1e6:.2f}M params, seq {args.seq}, batch {args.batch}, '
    f'attention {args.attention}, remat {args.remat}, {jax.device_count()} x '
    f'{jax.devices()[0].device_kind}; {peak_text} per device'
  )
  print(f'| {"system":<44} | {"s/step":>7} | {"tokens/s":>9} | {"MFU":>6} |')
  print(f'|{"-" * 46}|{"-" * 9}|{"-" * 11}|{"-" * 8}|')
  for name, s in rows:
    tps = tokens / s
    print(
      f'| {name:<44} | {s:7.3f} | {tps:9.0f} | {tps * flops_tok / (peak * jax.device_count()):6.1%} |'
    )
  result = {
    'variant': args.variant,
    'seq_len': args.seq,
    'batch': args.batch,
    'dtype': args.dtype,
    'attention': args.attention,
    'remat': args.remat,
    'device': jax.devices()[0].device_kind,
    'tokens_per_second': tokens / rows[0][1],
    'mfu': tokens / rows[0][1] * flops_tok / (peak * jax.device_count()),
    'peak_flops': peak,
    'flops_per_token': flops_tok,
  }
  if args.only_torch:  # the one row is torch's
    result = {
      k if k not in ('tokens_per_second', 'mfu') else f'torch_{k}': v for k, v in result.items()
    }
    print(json.dumps(result))
    return
  if args.data_batches and on_cpu:
    d = bench_data(cfg, args.data_batches)
    result.update(d)
    result['data_over_training'] = d['data_tokens_per_second'] / result['tokens_per_second']
    print(
      f'data pipeline (2-source mixture, packed, batch {args.batch} x {args.seq}): '
      f'{d["data_tokens_per_second"]:.0f} tokens/s = {result["data_over_training"]:.1f}x what '
      f'the train step consumes; first batch after a phase switch: '
      f'{d["phase_switch_seconds"] * 1e3:.0f} ms (a train step: {rows[0][1] * 1e3:.0f} ms)'
    )
  if args.sampling:
    sampled = bench_sampling(cfg, with_torch=args.torch)
    print(f'\n| {"generation (greedy, 32-token prompt, 128 new)":<48} | {"tokens/s":>9} |')
    for name, tps in sampled:
      print(f'| {name:<48} | {tps:9.0f} |')
    result['sampling_tokens_per_second'] = {name: tps for name, tps in sampled}
  if args.torch:
    result['torch_tokens_per_second'] = tokens / rows[1][1]
    result['speedup_vs_torch'] = rows[1][1] / rows[0][1]
    print(f'mtspec / torch speed ratio: {result["speedup_vs_torch"]:.2f}x')
  print(json.dumps(result))


if __name__ == '__main__':
  from mtspec.cpu import hugepages  # before anything else: glibc reads tunables at start only

  hugepages.reexec_with_huge_pages()
  main()
