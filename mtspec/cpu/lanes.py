"""An experiment tree's branches trained side by side on a CPU: one process per lane.

XLA:CPU spreads a small model's step over the cores poorly, so several processes pinned to
a share of the cores each train more steps than one process on all of them (docs/toy/
research_log.md, Lanes). The branches of a tree are independent runs, so on a CPU they are
dealt into lanes, each a process pinned to its own share of the cores that trains its runs
one after another. While the last lanes train, the experiment's own process works on the
cores of the lanes that have finished (train_branches' on_idle).

XLA:CPU's last bits depend on the thread count (the embedding's gradient), so a branch's
core count is fixed by the machine and the tree, never by what is left to train: a resumed
branch trains on as many cores as it would have, and ends with the same params.

  python -m mtspec.cpu.lanes <job.pkl>   # a lane (started by run_lanes, not by hand)
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time

MAX_AUTO_LANES = 4  # each lane holds its own copy of the model, data pipeline and XLA


class LaneError(RuntimeError):
  pass


def cpu_count() -> int:
  return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else 1


def auto_count(n_runs: int) -> int:
  """Lanes for n_runs runs on this CPU: one per core, at most MAX_AUTO_LANES; 1 where the OS
  cannot pin."""
  if not hasattr(os, 'sched_setaffinity'):
    return 1
  return max(1, min(cpu_count(), MAX_AUTO_LANES, n_runs))


def deal(steps: dict, n: int) -> list[list[str]]:
  """Runs (name -> steps) dealt into n lanes: longest first, each to the least-loaded lane;
  each lane keeps the runs in their original order."""
  load, lanes = [0] * n, [[] for _ in range(n)]
  for name in sorted(steps, key=lambda k: -steps[k]):  # stable: ties keep their order
    i = load.index(min(load))
    lanes[i].append(name)
    load[i] += steps[name]
  order = list(steps)
  return [sorted(lane, key=order.index) for lane in lanes if lane]


def split_cpus(n: int) -> list[list[int]]:
  """n shares of this process's cores (disjoint unless there are more lanes than cores);
  empty (unpinned) where the OS cannot pin."""
  if not hasattr(os, 'sched_getaffinity'):
    return [[] for _ in range(n)]
  cpus = sorted(os.sched_getaffinity(0))
  if n >= len(cpus):  # more lanes than cores (asked for): they share, one core each
    return [[cpus[i % len(cpus)]] for i in range(n)]
  size, extra = divmod(len(cpus), n)
  bounds = [i * size + min(i, extra) for i in range(n + 1)]
  return [cpus[bounds[i] : bounds[i + 1]] for i in range(n)]


def _env() -> dict:
  """The lane's environment: this process's (which finds the installed mtspec) plus the
  persistent compilation cache."""
  import jax

  env = dict(os.environ)
  cache = jax.config.jax_compilation_cache_dir
  if cache:
    env['JAX_COMPILATION_CACHE_DIR'] = cache
    env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = str(
      jax.config.jax_persistent_cache_min_compile_time_secs
    )
  return env


def _pin_threads(cpus) -> None:
  """Every thread of this process onto cpus (os.sched_setaffinity(0) moves only the caller;
  XLA's worker threads already exist)."""
  for tid in os.listdir('/proc/self/task'):
    try:
      os.sched_setaffinity(int(tid), cpus)
    except OSError:  # the thread has ended
      pass


def _wait(procs, cpus, on_idle) -> list[int]:
  """Exit codes of the lanes. While some lanes still train, on_idle() runs in this process
  on the cores of the lanes that finished well, so work that waits for training (the toy's
  scoring) fills their idle time without slowing the others."""
  codes, freed, pinned = [None] * len(procs), [], []
  can_pin = on_idle is not None and hasattr(os, 'sched_setaffinity')
  home = os.sched_getaffinity(0) if can_pin else None
  try:
    while None in codes:
      for i, p in enumerate(procs):
        if codes[i] is None and p.poll() is not None:
          codes[i] = p.returncode
          freed += cpus[i] if p.returncode == 0 else []
      if None in codes and freed and can_pin:
        if pinned != freed:  # threads started since inherit it
          _pin_threads(freed)
          pinned = list(freed)
        on_idle()
      time.sleep(0.5)
  finally:
    if can_pin:
      _pin_threads(home)
  return codes


def run_lanes(
  jobs: list[list[tuple]], n_lanes: int, job_dir: str, show_progress: bool = True, on_idle=None
):
  """Trains each lane's runs [(name, config, workdir)] in its own process, on 1/n_lanes of
  the cores; returns when all are done. A lane that fails lets the others finish, then
  raises (a NaN as NonFiniteLoss). on_idle: called again and again, on the freed cores,
  while the last lanes train (see _wait)."""
  os.makedirs(job_dir, exist_ok=True)
  cpus = split_cpus(n_lanes)
  procs = []
  for i, runs in enumerate(jobs):
    path = os.path.join(job_dir, f'lane{i}.pkl')
    with open(path, 'wb') as f:
      pickle.dump(
        {
          'runs': runs,
          'cpus': cpus[i],
          'lane': i,
          'parent': os.getpid(),
          'show_progress': show_progress,
        },
        f,
      )
    print(
      f'lane {i} (cores {",".join(map(str, cpus[i])) or "unpinned"}): '
      f'{", ".join(name for name, _, _ in runs)}',
      flush=True,
    )
    procs.append(
      (
        i,
        runs,
        path,
        subprocess.Popen([sys.executable, '-m', 'mtspec.cpu.lanes', path], env=_env()),
      )
    )
  try:
    codes = _wait([p for *_, p in procs], cpus, on_idle)
  finally:
    for _, _, _, p in procs:  # interrupted: take the lanes down with us
      if p.poll() is None:
        p.kill()
        p.wait()
  failures = []
  for (i, runs, path, _), code in zip(procs, codes):
    if code:
      failures.append((i, runs, code, _read_error(path)))
  if failures:
    i, runs, code, err = failures[0]
    names = ', '.join(name for name, _, _ in runs)
    msg = (
      f'lane {i} ({names}) stopped with exit status {code}: '
      f'{err.get("message", "see its output above")}'
    )
    if err.get('type') == 'NonFiniteLoss':
      from mtspec.trainer import NonFiniteLoss

      raise NonFiniteLoss(msg)
    raise LaneError(msg)


def train_branches(
  pending: dict, n_lanes: int, workdir: str, show_progress: bool = True, on_idle=None
) -> dict:
  """Trains the pending runs (name -> (config, workdir, steps, description)) in n_lanes lanes
  side by side; returns name -> summary. on_idle({name: summary} of the runs complete so
  far): called again and again, on the freed cores, while the last lanes train (see _wait)."""
  from mtspec import paths, run_summary

  for *_, what in pending.values():
    print(what)
  steps = {name: p[2] for name, p in pending.items()}
  jobs = [[(name, *pending[name][:2]) for name in lane] for lane in deal(steps, n_lanes)]
  complete = {}  # a complete run stays complete: read each summary once

  def idle():
    complete.update(
      {
        name: run_summary.read(p[1])
        for name, p in pending.items()
        if name not in complete and run_summary.is_complete(p[1], p[2])
      }
    )
    on_idle(complete)

  # the job files are for this machine's processes: local even for a gs:// workdir
  job_dir = os.path.join(paths.local_state_dir(workdir), '.lanes')
  run_lanes(jobs, n_lanes, job_dir, show_progress, on_idle and idle)
  return {name: run_summary.read(p[1]) for name, p in pending.items()}


def _read_error(job_path: str) -> dict:
  try:
    with open(job_path + '.error.json') as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def _die_with_parent(parent: int):
  """A lane must not outlive a killed experiment (it would keep writing its run)."""
  if sys.platform == 'linux':
    import ctypes
    import signal

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
  if os.getppid() != parent:  # the parent died before prctl took effect
    sys.exit(1)


def _lane_main(job_path: str):
  with open(job_path, 'rb') as f:
    job = pickle.load(f)
  _die_with_parent(job['parent'])
  if job['cpus']:
    os.sched_setaffinity(0, job['cpus'])  # before jax starts its thread pools
  from absl import logging

  logging.set_verbosity(logging.ERROR)
  from mtspec import trainer

  try:
    for name, cfg, workdir in job['runs']:
      t = time.time()
      trainer.train(cfg, workdir, job['show_progress'], progress_position=job['lane'])
      print(f'{name}: done in {time.time() - t:.0f} s (lane {job["lane"]})', flush=True)
  except Exception as e:
    with open(job_path + '.error.json', 'w') as f:
      json.dump({'type': type(e).__name__, 'message': str(e)}, f)
    raise


if __name__ == '__main__':
  _lane_main(sys.argv[1])
