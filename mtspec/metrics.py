"""Metrics: JSONL + TensorBoard event files, throughput and MFU."""

import functools
import json
import os
import sys
import time

import jax
import jax.numpy as jnp

from mtspec import paths

# Dense peak FLOP/s per chip for the compute dtype (vendor figures).
KNOWN_PEAKS = {
  ('H100', 'bfloat16'): 989e12,
  ('H100', 'float32'): 67e12,
  ('H200', 'bfloat16'): 989e12,
  ('H200', 'float32'): 67e12,
  ('A100', 'bfloat16'): 312e12,
  ('A100', 'float32'): 19.5e12,
  ('TPU v4', 'bfloat16'): 275e12,
  ('TPU v5 lite', 'bfloat16'): 197e12,
  ('TPU v5e', 'bfloat16'): 197e12,
  ('TPU v5p', 'bfloat16'): 459e12,
  ('TPU v6 lite', 'bfloat16'): 918e12,
}


@functools.cache  # once per process: an experiment's runs share the machine
def measure_matmul_peak(dtype='float32', n: int = 2048, repeats: int = 5) -> float:
  """FLOP/s of a large square matmul on the first device: this machine's practical peak."""
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda a: a @ a)
  f(a).block_until_ready()
  best = float('inf')
  for _ in range(repeats):
    t = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n**3 / best


def peak_flops_per_device(dtype: str, configured: float = 0.0) -> tuple[float, str]:
  """(peak FLOP/s, where the figure came from)."""
  if configured > 0:
    return configured, 'config'
  kind = jax.devices()[0].device_kind
  for (chip, dt), peak in KNOWN_PEAKS.items():
    if chip in kind and dt == dtype:
      return peak, f'{chip} spec sheet'
  return measure_matmul_peak(dtype), f'measured {dtype} matmul on {kind}'


def _summary_writer_class():
  """tensorboardX's SummaryWriter, imported lazily (only process 0 writes) and without
  torch: tensorboardX imports torch, when installed, only to accept its tensors, a slow
  import every training process would pay for nothing (we log floats)."""
  if 'tensorboardX' not in sys.modules and 'torch' not in sys.modules:
    sys.modules['torch'] = None  # `import torch` inside tensorboardX raises ImportError
    try:
      import tensorboardX  # noqa: F401
    finally:
      del sys.modules['torch']
  from tensorboardX import SummaryWriter

  return SummaryWriter


def _row_step(line: str) -> int | None:
  try:
    return int(json.loads(line)['step'])
  except (ValueError, KeyError, TypeError):
    return None  # a line cut short by a killed process


def _drop_rows_after(path: str, step: int):
  """Keeps the whole rows of metrics.jsonl up to `step`, rewriting the file atomically
  (paths.write_text), so that a reader sees the old file or the new one."""
  lines = paths.read_text(path).splitlines(keepends=True)
  keep = [
    line.rstrip('\n') + '\n' for line in lines if (s := _row_step(line)) is not None and s <= step
  ]
  if keep != lines:
    paths.write_text(path, ''.join(keep))


class MetricsWriter:
  """Writes one JSON object per line and the same scalars as TensorBoard events.

  start_step: the step the run starts from. Rows an earlier attempt logged after it (it died
  before its next checkpoint) are dropped from metrics.jsonl, and TensorBoard hides their
  events (purge_step), so both show each step once.
  """

  def __init__(self, workdir: str, enabled: bool = True, start_step: int = 0):
    self.enabled = enabled
    if not enabled:
      return
    paths.makedirs(workdir)
    path = os.path.join(workdir, 'metrics.jsonl')
    resumed = paths.exists(path)
    if resumed:
      _drop_rows_after(path, start_step)
    self.jsonl = paths.Appender(path)
    self.tb = _summary_writer_class()(
      os.path.join(workdir, 'tb'), purge_step=start_step + 1 if resumed else None
    )

  def write(self, step: int, scalars: dict):
    if not self.enabled:
      return
    row = {'step': int(step), **{k: float(v) for k, v in scalars.items()}}
    self.jsonl.write(json.dumps(row) + '\n')
    self.jsonl.flush()
    for k, v in row.items():
      if k != 'step':
        self.tb.add_scalar(k, v, step)
    self.tb.flush()

  def close(self):
    if self.enabled:
      self.jsonl.close()
      self.tb.close()
