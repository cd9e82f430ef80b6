"""Two processes on 127.0.0.1 (4 CPU devices each, gloo) match one process with 8 devices."""

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
from conftest import ROOT, run_module
from test_stages import assert_same_params

from mtspec import trainer
from mtspec.data.mixture import MixedSource

ARGS = [
  '-m',
  'mtspec.main',
  '--config=tests/configs/two_phase.py',
  '--config.data.num_shards=2',
  '--config.mesh.shape=(2,-1,1)',
]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _start_pair(workdir, port):
  env = {**os.environ, 'PYTHONPATH': ROOT, 'XLA_FLAGS': '--xla_force_host_platform_device_count=4'}
  return [
    subprocess.Popen(
      [
        sys.executable,
        *ARGS,
        f'--workdir={workdir}',
        f'--coordinator=127.0.0.1:{port}',
        '--num_processes=2',
        f'--process_id={i}',
      ],
      cwd=ROOT,
      env=env,
      stdout=subprocess.DEVNULL,
      stderr=open(f'{workdir}.p{i}.log', 'w'),
    )
    for i in range(2)
  ]


def test_two_processes_match_one_process_with_eight_devices(tmp_path):
  one = tmp_path / 'one'
  run_module(
    [*ARGS, f'--workdir={one}'], env={'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
  )
  two = tmp_path / 'two'
  procs = _start_pair(two, _free_port())
  deadline = time.time() + 300  # kill both after the first checkpoint: a resume follows
  while not (two / 'checkpoints' / '8').exists() and time.time() < deadline:
    time.sleep(0.02)
  for p in procs:
    p.send_signal(signal.SIGKILL)
    p.wait()
  assert not (two / 'checkpoints' / '28').exists()
  procs = _start_pair(two, _free_port())
  for i, p in enumerate(procs):
    assert p.wait(timeout=400) == 0, open(f'{two}.p{i}.log').read()[-3000:]
  # Same data and math; only the order of cross-process float sums (gloo) differs.
  assert_same_params(
    trainer.checkpoint_params(str(two)), trainer.checkpoint_params(str(one)), atol=1e-6
  )
  rows_one = [l for l in open(one / 'metrics.jsonl')]
  rows_two = [l for l in open(two / 'metrics.jsonl')]
  loss = lambda rows: [__import__('json').loads(r)['loss'] for r in rows][-5:]
  np.testing.assert_allclose(loss(rows_two), loss(rows_one), rtol=1e-6)


def test_every_example_is_read_once_per_epoch_across_shards():
  sources = {'a': _Named(list(range(30))), 'b': _Named(list(range(100, 110)))}
  weights = {'a': 0.75, 'b': 0.25}
  shards = [
    MixedSource(sources, weights, 0, 'p', 8, shard_index=s, shard_count=2) for s in range(2)
  ]
  seen = {'a': [], 'b': []}
  for shard in shards:
    draws = [shard.mixture.locate(i) for i in range(40)]  # 30 a's and 10 b's per shard
    for name in 'ab':
      ks = sorted(k for n, k in draws if n == name)
      epoch_len = len(shard.sources[name].shard)
      seen[name] += [shard.sources[name][k] for k in ks[:epoch_len]]
  assert sorted(seen['a']) == list(range(30))  # both shards together: each example once
  assert sorted(seen['b']) == list(range(100, 110))


class _Named(list):
  kind = 'text'
