"""Profile the jitted train step: step time, CPU/system time, page faults, top XLA ops.

  python -m mtspec.profile_step                      # small shape, 8 timed steps
  python -m mtspec.profile_step --trace=/tmp/trace   # + per-op table from a jax.profiler trace
  python -m mtspec.profile_step --hlo=/tmp/step.hlo  # + the optimised HLO

What the numbers mean on CPU: `sys` is kernel time, mostly page faults on XLA's per-step
scratch block (see mtspec/__init__.py); per-op times come from the trace's thunk events
(asynchronous ops are timed from launch to their `end:` event, so concurrent ops overlap).
"""
import argparse
import collections
import glob
import gzip
import json
import os
import resource
import time

import jax
import numpy as np

from configs import lm
from mtspec.bench import build_step


def build(variant: str, batch: int, seq: int, dtype: str):
  """The benchmark's step (mtspec.bench.build_step) for this shape."""
  cfg = lm.get_config(variant)
  cfg.train.update(seq_len=seq, batch_size=batch)
  cfg.model.dtype = dtype
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
  p.add_argument('--variant', default='small')
  p.add_argument('--batch', type=int, default=16)
  p.add_argument('--seq', type=int, default=256)
  p.add_argument('--dtype', default='float32')
  p.add_argument('--steps', type=int, default=8)
  p.add_argument('--trace', default='', help='directory for a jax.profiler trace of 3 steps')
  p.add_argument('--hlo', default='', help='write the optimised HLO here')
  p.add_argument('--top', type=int, default=30)
  args = p.parse_args()

  step, state, data, mesh = build(args.variant, args.batch, args.seq, args.dtype)
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
  times, r0, t0 = [], resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
  for _ in range(args.steps):
    t = time.perf_counter()
    run()
    times.append(time.perf_counter() - t)
  r1 = resource.getrusage(resource.RUSAGE_SELF)
  n = args.steps
  tokens = args.batch * args.seq
  print(f'step: min {min(times):.3f} s, median {np.median(times):.3f} s '
        f'({tokens / np.median(times):.0f} tokens/s); per step: user '
        f'{(r1.ru_utime - r0.ru_utime) / n:.2f} s, sys {(r1.ru_stime - r0.ru_stime) / n:.2f} s, '
        f'minor page faults {(r1.ru_minflt - r0.ru_minflt) / n:.0f}')
  if args.trace:
    with jax.profiler.trace(args.trace, create_perfetto_trace=True):
      for _ in range(3):
        run()
    op_table(args.trace, 3, args.top)


if __name__ == '__main__':
  from mtspec import hugepages
  hugepages.reexec_with_huge_pages()
  main()
