import atexit
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # so `configs` imports like it does from the repo root

# One XLA compilation cache for the session, shared with every process the tests start (they
# inherit the environment): most of them compile the same tiny models again, which is much of
# the suite's time on a slow host. Set before anything imports jax; a cache hit runs the same
# executable, so results do not change.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _cache = tempfile.mkdtemp(prefix='mtspec_jax_cache_')
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ.update(JAX_COMPILATION_CACHE_DIR=_cache,
                    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
                    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='-1')


def run_module(args, env=None, timeout=600, check=True):
  """Runs `python -m ...` from the repo root in a fresh process; returns CompletedProcess."""
  full_env = {**os.environ, 'PYTHONPATH': ROOT, **(env or {})}
  proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=full_env, capture_output=True,
                        text=True, timeout=timeout)
  if check and proc.returncode != 0:
    raise AssertionError(f'{args} exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\n'
                         f'stderr:\n{proc.stderr[-5000:]}')
  return proc


@pytest.fixture
def tiny_config():
  from configs import lm
  return lm.get_config('tiny')


def fresh_state(cfg, mesh):
  """(schedule, optimizer, shapes, shardings, state) of a freshly initialised tiny run."""
  from mtspec import optim, train_state
  schedule = optim.lr_schedule(1e-3, 40, 5, 'cosine', 0.1)
  opt = optim.make_optimizer(cfg.train, schedule)
  shapes = train_state.model_shapes(cfg.model)
  shards = train_state.state_shardings(mesh, opt, shapes)
  return schedule, opt, shapes, shards, train_state.init_state(cfg.model, opt, 0, shards)
