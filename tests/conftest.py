import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One XLA compilation cache for the session, shared with every process the tests start (they
# inherit the environment): most of them compile the same tiny models again, which is much of
# the suite's time on a slow host. Set before anything imports jax; a cache hit runs the same
# executable, so results do not change.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _cache = tempfile.mkdtemp(prefix='mtspec_jax_cache_')
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ.update(
    JAX_COMPILATION_CACHE_DIR=_cache,
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='-1',
  )


# The suite runs on two pytest-xdist workers (scripts/test.sh). Each test file goes to one
# worker, so its module fixtures are built once; the toy tests and the notebooks go together,
# as they share the quick runs (tests/toy_fixtures.py). The longest groups go first, so that
# the workers finish together. (xdist's own --dist loadgroup does not group under pytest 9.)
GROUPS = {'test_colabs.py': 'quick_toy_runs', 'test_toy_quick.py': 'quick_toy_runs'}
LONGEST_FIRST = (
  'test_gcs.py',
  'quick_toy_runs',
  'test_multihost.py',
  'test_stages.py',
  'test_lanes.py',
  'test_model.py',
  'test_sharding.py',
  'test_bench.py',
)


def _group(nodeid: str) -> str:
  name = os.path.basename(nodeid.split('::')[0])
  return GROUPS.get(name, name)


# The fast tier (`bash scripts/test.sh -m fast`, under a minute): config, data, spec tooling,
# world files and the import graph; no training runs. Everything runs in the full suite.
FAST_FILES = (
  'test_config.py',
  'test_data.py',
  'test_imports.py',
  'test_phases.py',
  'test_spec_batch.py',
  'test_spec_cli.py',
  'test_spec_contamination.py',
  'test_spec_parse.py',
  'test_spec_prompts.py',
  'test_spec_sets.py',
  'test_spec_statements.py',
  'test_spec_template.py',
  'test_world_data.py',
  'test_world_schema.py',
)


def pytest_collection_modifyitems(items):
  for item in items:
    if os.path.basename(item.nodeid.split('::')[0]) in FAST_FILES:
      item.add_marker(pytest.mark.fast)
  rank = {group: i for i, group in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(_group(item.nodeid), len(rank)))  # stable within a group


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
  from xdist.scheduler import LoadScopeScheduling

  class ByGroup(LoadScopeScheduling):
    def _split_scope(self, nodeid):
      return _group(nodeid)

  return ByGroup(config, log)


def run_module(args, env=None, timeout=600, check=True):
  """Runs `python -m ...` from the repo root in a fresh process; returns CompletedProcess."""
  full_env = {**os.environ, 'PYTHONPATH': ROOT, **(env or {})}
  proc = subprocess.run(
    [sys.executable, *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout
  )
  if check and proc.returncode != 0:
    raise AssertionError(
      f'{args} exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\n'
      f'stderr:\n{proc.stderr[-5000:]}'
    )
  return proc


def sigkill_when(proc: subprocess.Popen, ready, timeout: float = 60) -> tuple[str, str]:
  """SIGKILLs proc as soon as ready() holds (polled); fails the test if proc ends first.
  Returns what proc printed (stdout, stderr)."""
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None and not ready():
    time.sleep(0.005)
  if proc.poll() is not None:
    pytest.fail(
      f'the process ended (rc {proc.returncode}) before it could be killed: '
      f'{proc.stderr.read()[-2000:]}'
    )
  proc.send_signal(signal.SIGKILL)
  out = proc.communicate()
  assert proc.returncode == -signal.SIGKILL
  return out


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
