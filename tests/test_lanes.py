"""Branches trained side by side in lanes (mtspec.cpu.lanes): same results, loud failures;
the accelerator path never imports mtspec.cpu."""

import os
import shutil
import signal
import subprocess
import sys
import time

import ml_collections
import pytest
from conftest import ROOT, run_module
from test_phases import two_source_config
from test_stages import assert_same_params

from mtspec import defaults, experiment, trainer
from mtspec.cpu import lanes


def test_deal_balances_steps_and_keeps_the_order():
  steps = {'aft_s0': 20, 'mid_a_s0': 180, 'mid_b_s0': 180, 'aft_s1': 20, 'mid_a_s1': 180}
  dealt = lanes.deal(steps, 2)
  assert sorted(sum(dealt, [])) == sorted(steps)
  loads = sorted(sum(steps[n] for n in lane) for lane in dealt)
  assert loads == [220, 360]  # the best split of 180, 180, 180, 20, 20
  for lane in dealt:
    assert lane == [n for n in steps if n in lane]
  assert lanes.deal({'a': 5}, 3) == [['a']]  # no empty lanes


def test_lane_count():
  assert experiment.lane_count(3, 2) == 2 and experiment.lane_count(1, 5) == 1
  assert experiment.lane_count(0, 12) == min(lanes.cpu_count(), lanes.MAX_AUTO_LANES)


def test_lanes_in_a_multi_process_job_are_refused_by_name(monkeypatch):
  import jax

  from mtspec.errors import ConfigError

  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  assert experiment.lane_count(0, 12) == 1  # auto: one process trains the branches
  with pytest.raises(ConfigError, match=r'config.experiment.lanes=2: .* 2 processes'):
    experiment.lane_count(2, 12)


def test_the_accelerator_path_never_imports_the_cpu_package(tmp_path):
  # a tree with lanes=1 trained in a fresh process, then auto lanes off the CPU
  code = f"""if True:
    import sys, jax, ml_collections, pathlib
    from test_phases import two_source_config
    from mtspec import experiment, main, trainer
    c = two_source_config(pathlib.Path({str(tmp_path)!r}))
    c.experiment = ml_collections.ConfigDict(dict(
        trunk=('one',), init_mode='params', lanes=1, trunk_from='',
        branches=ml_collections.ConfigDict({{'b': dict(phases=('two',), seed=1)}})))
    experiment.run_tree(c, {str(tmp_path / 'exp')!r}, show_progress=False)
    jax.default_backend = lambda: 'gpu'
    assert experiment.lane_count(0, 12) == 1
    print(sorted(m for m in sys.modules if m.startswith('mtspec.cpu')))"""
  tests_path = {'PYTHONPATH': os.pathsep.join([ROOT, os.path.join(ROOT, 'tests')])}
  out = run_module(['-c', code], env=tests_path).stdout.strip().splitlines()
  assert out[-1] == '[]'
  assert (tmp_path / 'exp' / 'b' / 'summary.json').exists()


def test_split_cpus(monkeypatch):
  monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: {0, 1, 2, 3, 4, 5, 6})
  assert lanes.split_cpus(3) == [[0, 1, 2], [3, 4], [5, 6]]
  assert lanes.split_cpus(1) == [[0, 1, 2, 3, 4, 5, 6]]
  monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: {4, 9})
  assert lanes.split_cpus(3) == [[4], [9], [4]]  # more lanes than cores: they share


def _tree_config(tmp_path, lanes_n, branches):
  c = two_source_config(tmp_path)
  c.experiment = ml_collections.ConfigDict(
    dict(
      trunk=('one',),
      init_mode='params',
      lanes=lanes_n,
      trunk_from='',
      branches=ml_collections.ConfigDict(branches),
    )
  )
  return c


BRANCHES = {
  'b_two': dict(phases=('two',), seed=1),
  'b_one': dict(phases=('one',), seed=2),
  'b_both': dict(phases=('two', 'one'), seed=3),
}


def test_a_branch_trained_alone_later_matches_its_lane(tmp_path, capfd):
  # three branches in two lanes; then the same tree with two branches complete, as a
  # resumed tree: the third trains alone but still on one core, to the very same params
  experiment.run_tree(
    _tree_config(tmp_path, 2, BRANCHES), str(tmp_path / 'all'), show_progress=False
  )
  out = capfd.readouterr().out
  assert 'lane 0 (cores' in out and 'lane 1 (cores' in out
  for name in BRANCHES:
    assert f'{name}: done in' in out
  again = _tree_config(tmp_path, 2, BRANCHES)
  again.experiment.trunk_from = str(tmp_path / 'all')
  for done in ('b_two', 'b_one'):  # complete: skipped
    shutil.copytree(tmp_path / 'all' / done, tmp_path / 'alone' / done)
  experiment.run_tree(again, str(tmp_path / 'alone'), show_progress=False)
  out = capfd.readouterr().out
  assert 'lane 0 (cores' in out and 'lane 1' not in out
  assert_same_params(
    trainer.checkpoint_params(str(tmp_path / 'all' / 'b_both')),
    trainer.checkpoint_params(str(tmp_path / 'alone' / 'b_both')),
  )


def test_a_nan_in_one_lane_stops_the_tree_and_the_other_lane_finishes(tmp_path):
  c = _tree_config(
    tmp_path, 2, {'good': dict(phases=('two',), seed=1), 'bad': dict(phases=('explode',), seed=1)}
  )
  defaults.new_phase(c, 'explode', 10, {'alpha': 1.0}, lr=1e35)
  with pytest.raises(
    trainer.NonFiniteLoss,
    match=r'lane \d \(bad\) stopped with exit status '
    r"1: loss is .* \(phase 'explode'\)",
  ):
    experiment.run_tree(c, str(tmp_path / 'exp'), show_progress=False)
  assert (tmp_path / 'exp' / 'good' / 'summary.json').exists()
  assert not (tmp_path / 'exp' / 'bad' / 'summary.json').exists()


def _thread_affinities() -> set:
  return {frozenset(os.sched_getaffinity(int(t))) for t in os.listdir('/proc/self/task')}


class _Lane:
  """A lane that trains until until() holds, then finishes well (polled like a Popen)."""

  def __init__(self, until):
    self.until, self.returncode = until, None

  def poll(self):
    if self.returncode is None and self.until():
      self.returncode = 0
    return self.returncode


def test_work_waiting_for_the_lanes_runs_on_the_cores_of_the_finished_ones():
  cpus = lanes.split_cpus(2)
  home = _thread_affinities()
  deadline = time.time() + 60
  seen = []
  # the second lane trains until the work has run twice on the first one's cores
  codes = lanes._wait(
    [
      subprocess.Popen([sys.executable, '-c', 'pass']),
      _Lane(lambda: len(seen) >= 2 or time.time() > deadline),
    ],
    cpus,
    lambda: seen.append(_thread_affinities()),
  )
  assert codes == [0, 0]
  assert len(seen) >= 2  # again and again while the slow lane trains
  assert all(s == {frozenset(cpus[0])} for s in seen)  # every thread, on the freed cores
  assert _thread_affinities() == home  # given back afterwards
  # a lane that failed frees nothing: its error comes first. The other lane trains on for
  # two more checks after the failure was seen.
  failed = subprocess.Popen([sys.executable, '-c', 'raise SystemExit(1)'])
  checks = []

  def after_two_checks():
    checks.extend([1] if failed.poll() is not None else [])
    return len(checks) > 2 or time.time() > deadline

  seen.clear()
  codes = lanes._wait([failed, _Lane(after_two_checks)], cpus, lambda: seen.append(1))
  assert codes == [1, 0] and len(checks) > 2 and not seen


def test_a_lane_dies_with_its_experiment():
  # the lane says it is set up (after prctl) on the pipe it shares with its experiment
  child = (
    'import os, time; from mtspec.cpu import lanes; '
    'lanes._die_with_parent(os.getppid()); print(os.getpid(), flush=True); '
    'time.sleep(120)'
  )
  parent = (
    'import subprocess, sys, time; '
    f'subprocess.Popen([sys.executable, "-c", {child!r}]); time.sleep(120)'
  )
  proc = subprocess.Popen(
    [sys.executable, '-c', parent],
    cwd=ROOT,
    stdout=subprocess.PIPE,
    text=True,
    env={**os.environ, 'PYTHONPATH': ROOT},
  )
  pid = int(proc.stdout.readline())
  assert _alive(pid)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  deadline = time.time() + 10
  while time.time() < deadline and _alive(pid):
    time.sleep(0.05)
  assert not _alive(pid)


def _alive(pid: int) -> bool:
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().split(')')[-1].split()[0] != 'Z'  # a zombie has exited
  except FileNotFoundError:
    return False
