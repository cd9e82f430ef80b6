"""Profile the jitted train step: step time, CPU/system time, page faults, top XLA ops.

  python -m mtspec.profile_step                      # small shape, 8 timed steps
  python -m mtspec.profile_step --trace=/tmp/trace   # + per-op table from a jax.profiler trace
  python -m mtspec.profile_step --hlo=/tmp/step.hlo  # + the optimised HLO
  python -m mtspec.profile_step --config=configs/cheese_toy.py:default --set=model.d_ff=256
                                         # another config's model and batch, one key changed

What the numbers mean on CPU: `sys` is kernel time, mostly page faults on XLA's per-step
scratch block (see mtspec/cpu/hugepages.py); per-op times come from the trace's thunk events
(asynchronous ops are timed from launch to their `end:` event, so concurrent ops overlap).
"""

import argparse
import ast
import collections
import glob
import gzip
import json
import os
import resource
import time

import jax
import numpy as np

from mtspec import cli, defaults
from mtspec.bench import build_step


def apply_overrides(cfg, overrides):
  """'key.path=value' items (value a Python literal) set keys the config already has."""
  for item in overrides:
    key, sep, value = item.partition('=')
    was_locked = cfg.is_locked
    cfg.lock()  # a locked config refuses new keys, so a misspelt key is an error
    try:
      if not sep:
        raise ValueError('no "="')
      cfg.update_from_flattened_dict({key: ast.literal_eval(value)})
    except (KeyError, ValueError, SyntaxError, TypeError) as e:
      raise SystemExit(
        f'--set={item!r}: expected key.path=<Python literal> for a key the '
        f'config has ({type(e).__name__}: {e})'
      ) from None
    finally:
      if not was_locked:
        cfg.unlock()
  return cfg


def build(cfg, batch: int | None, seq: int | None, dtype: str | None):
  """The benchmark's step (mtspec.bench.build_step) for cfg's model at this shape."""
  cfg.train.update(seq_len=seq or cfg.train.seq_len, batch_size=batch or cfg.train.batch_size)
  cfg.model.dtype = dtype or cfg.model.dtype
  m = cfg.model
  print(
    f'model: vocab {m.vocab_size}, width {m.d_model}, {m.n_layers} layers, {m.n_heads} '
    f'heads, MLP {m.d_ff}, {m.dtype}; batch {cfg.train.batch_size} x seq {cfg.train.seq_len}'
  )
  return build_step(cfg)


def op_table(trace_dir: str, n_steps: int, top: int):
  path = sorted(glob.glob(os.path.join(trace_dir, 'plugins/profile/*/perfetto_trace.json.gz')))[-1]
  events = json.load(gzip.open(path))
  events = events['traceEvents'] if isinstance(events, dict) else events
  spans = [e for e in events if e.get('ph') == 'X']
  ends = collections.defaultdict(list)
  for e in spans:
    if e['name'].startswith('end: '):
      ends[e['name'][5:]].append(e['ts'] + e.get('dur', 0))
  total = collections.Counter()
  for e in spans:
    name = e['name']
    if name.startswith(('end: ', '$', 'Thread', 'Thunk', 'Slinky', 'Wait', 'Pjit', 'Common')):
      continue
    done = min((t for t in ends.get(name, []) if t >= e['ts']), default=e['ts'] + e['dur'])
    total[name] += done - e['ts']
  print(f'\ntop ops, ms per step (launch to completion; {n_steps} traced steps):')
  for name, us in total.most_common(top):
    print(f'  {us / n_steps / 1e3:8.1f}  {name}')


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--variant', default='small', help="configs/lm.py's model variant")
  p.add_argument('--config', default='', help='a config file[:arg] instead of configs/lm.py')
  p.add_argument('--set', action='append', default=[], help='key.path=value (repeatable)')
  p.add_argument('--batch', type=int, default=None, help="default: the config's (lm: 16)")
  p.add_argument('--seq', type=int, default=None, help="default: the config's (lm: 256)")
  p.add_argument('--dtype', default=None, help="default: the config's")
  p.add_argument('--steps', type=int, default=8)
  p.add_argument('--trace', default='', help='directory for a jax.profiler trace of 3 steps')
  p.add_argument('--hlo', default='', help='write the optimised HLO here')
  p.add_argument('--top', type=int, default=30)
  args = p.parse_args()

  if args.config:
    cfg = cli.load_config(args.config)
  else:
    cfg = defaults.base_config(args.variant)
    cfg.train.update(seq_len=256, batch_size=16)  # the benchmark's shape
  apply_overrides(cfg, args.set)
  step, state, data, mesh = build(cfg, args.batch, args.seq, args.dtype)
  with jax.set_mesh(mesh):
    compiled = step.jitted.lower(state, data, None).compile()
  mem = compiled.memory_analysis()
  print(f'scratch (temp) bytes per step: {mem.temp_size_in_bytes / 2**20:.0f} MiB')
  if args.hlo:
    with open(args.hlo, 'w') as f:
      f.write(compiled.as_text())
  holder = [state]

  def run():
    holder[0], metrics = step(holder[0], data)
    jax.block_until_ready(metrics['loss'])

  for _ in range(2):
    run()
  times, r0 = [], resource.getrusage(resource.RUSAGE_SELF)
  for _ in range(args.steps):
    t = time.perf_counter()
    run()
    times.append(time.perf_counter() - t)
  r1 = resource.getrusage(resource.RUSAGE_SELF)
  n = args.steps
  tokens = cfg.train.batch_size * cfg.train.seq_len
  print(
    f'step: min {min(times):.3f} s, median {np.median(times):.3f} s '
    f'({tokens / np.median(times):.0f} tokens/s); per step: user '
    f'{(r1.ru_utime - r0.ru_utime) / n:.2f} s, sys {(r1.ru_stime - r0.ru_stime) / n:.2f} s, '
    f'minor page faults {(r1.ru_minflt - r0.ru_minflt) / n:.0f}'
  )
  if args.trace:
    with jax.profiler.trace(args.trace, create_perfetto_trace=True):
      for _ in range(3):
        run()
    op_table(args.trace, 3, args.top)


if __name__ == '__main__':
  from mtspec.cpu import hugepages  # before anything else: glibc reads tunables at start only

  hugepages.reexec_with_huge_pages()
  main()
