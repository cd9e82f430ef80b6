"""Experiment trees: a shared trunk, then branches that each start from the trunk's end.

config.experiment:
  trunk       phase names the trunk runs (e.g. ('pretrain',))
  branches    name -> {phases: (...), seed: int}; each starts from the trunk's final checkpoint
  init_mode   params | full: what a branch takes from the trunk
  trunk_from  optional: the workdir of an earlier tree whose complete trunk this tree's
              branches start from (nothing is retrained; its phases and tokenizer must match)
  lanes       branches trained side by side, one process each (mtspec.cpu.lanes); 0 (default):
              one per CPU core on a CPU, at most 4; 1 on an accelerator

One command runs the whole tree; the trunk trains once; a rerun skips complete runs and
resumes incomplete ones. experiment.json lists every run with its final checkpoint and lineage.
"""

import hashlib

import jax

from mtspec import paths, run_summary, trainer
from mtspec import phases as phases_lib
from mtspec.errors import ConfigError


def run_config(
  cfg,
  name: str,
  phase_order,
  seed: int,
  tokenizer: str,
  data_dir: str,
  init_checkpoint: str = '',
  init_mode: str = 'params',
):
  c = cfg.copy_and_resolve_references()
  with c.unlocked():
    del c['experiment']
    c.run_name, c.phase_order = name, tuple(phase_order)
    c.train.seed = seed
    c.data.tokenizer, c.data.tfds_data_dir = tokenizer, data_dir
    c.init.checkpoint, c.init.mode = init_checkpoint, init_mode
  return c


def _final_lineage(summary: dict) -> dict:
  return paths.read_json(paths.join(summary['final_checkpoint'], 'meta', 'metadata'))


def _sha256(path: str) -> str:
  return hashlib.sha256(paths.read_bytes(path)).hexdigest()


def borrowed_trunk(src: str, phases: tuple, total_steps: int, tokenizer: str) -> dict:
  """The summary of the complete trunk of the tree in workdir `src`, checked against this
  tree's trunk phases, step count and tokenizer (a trunk read with another tokenizer would
  read every token wrong)."""
  key = 'config.experiment.trunk_from'
  path = paths.join(src, 'experiment.json')
  if not paths.exists(path):
    raise ConfigError(
      f'{key}={src!r}: no experiment.json there (run an experiment tree in that workdir first)'
    )
  tree = paths.read_json(path)
  trunk = next((r for r in tree['runs'] if r['name'] == 'trunk'), None)
  if trunk is None or tuple(trunk['phases']) != phases:
    raise ConfigError(
      f'{key}={src!r}: its trunk ran phases '
      f"{trunk and trunk['phases']}, this config's trunk runs {list(phases)}"
    )
  if not run_summary.is_complete(trunk['workdir'], total_steps):
    raise ConfigError(
      f'{key}={src!r}: its trunk ({trunk["workdir"]}) has not completed the '
      f"{total_steps} steps this config's trunk runs"
    )
  if tokenizer and _sha256(tree['tokenizer']) != _sha256(tokenizer):
    raise ConfigError(
      f'{key}={src!r}: its trunk was trained with tokenizer '
      f"{tree['tokenizer']}, which differs from this tree's {tokenizer} "
      '(another world, corpus or vocabulary size?)'
    )
  return dict(run_summary.read(trunk['workdir']), workdir=trunk['workdir'])


def shared_tokenizer(cfg, workdir: str, data_dir: str) -> str:
  """One tokenizer for every run of the tree, trained on every source the tree names."""
  if cfg.data.tokenizer:
    return cfg.data.tokenizer
  names = sorted({s for p in cfg.phases.values() for s, w in dict(p.weights).items() if w > 0})
  sources = trainer.open_sources(cfg, names, data_dir)
  return trainer.load_or_train_tokenizer(cfg, workdir, sources).path


def _train(rcfg, run_dir: str, show_progress: bool) -> dict:
  return {k: v for k, v in trainer.train(rcfg, run_dir, show_progress).items() if k != 'state'}


def lane_count(requested: int, n_runs: int) -> int:
  """config.experiment.lanes resolved for n_runs branches: requested > 0: that many; 0: one
  per core on a single-process CPU job (mtspec.cpu.lanes), else 1."""
  if requested > 1 and jax.process_count() > 1:
    raise ConfigError(
      f'config.experiment.lanes={requested}: lanes are processes of one '
      f'machine; this job has {jax.process_count()} processes (set lanes=1)'
    )
  if requested > 0:
    return max(1, min(requested, n_runs))
  if jax.default_backend() != 'cpu' or jax.process_count() > 1:
    return 1
  from mtspec.cpu import lanes  # only a single-process CPU job gets here

  return lanes.auto_count(n_runs)


def _tree(workdir: str, tokenizer: str, plans: dict, summaries: dict) -> dict:
  runs = [
    {
      'name': name,
      'phases': list(plans[name][0]),
      'seed': plans[name][1],
      'workdir': s.get('workdir', paths.join(workdir, name)),
      'final_checkpoint': s['final_checkpoint'],
      'lineage': _final_lineage(s),
    }
    for name, s in summaries.items()
  ]
  return {'workdir': workdir, 'tokenizer': tokenizer, 'runs': runs}


def run_tree(cfg, workdir: str, show_progress: bool = True, on_idle=None) -> dict:
  """Trains the trunk, then the branches; returns the tree (experiment.json's content).
  With lanes (config.experiment.lanes, mtspec.cpu.lanes), on_idle(tree of the runs complete
  so far) is called again and again on the cores of the lanes that have finished, while the
  last lanes still train."""
  exp = cfg.experiment
  if not exp.trunk:
    raise ConfigError('config.experiment.trunk is empty: name the phases the trunk runs')
  paths.makedirs(workdir)
  data_dir = cfg.data.tfds_data_dir or paths.join(workdir, 'data')
  tokenizer = shared_tokenizer(cfg, workdir, data_dir)
  plans = {'trunk': (tuple(exp.trunk), cfg.train.seed)}
  plans.update(
    {name: (tuple(b.phases), b.get('seed', cfg.train.seed)) for name, b in exp.branches.items()}
  )
  for name, (order, _) in plans.items():  # validate every run before training any of them
    with cfg.unlocked():
      probe = run_config(cfg, name, order, 0, tokenizer, data_dir)
    phases_lib.plan(probe)
  # from the whole tree, not from what is left: a resumed branch trains on as many cores
  n_lanes = lane_count(exp.get('lanes', 0), len(exp.branches))

  summaries, pending = {}, {}
  for name, (order, seed) in plans.items():
    init = '' if name == 'trunk' else summaries['trunk']['final_checkpoint']
    rcfg = run_config(cfg, name, order, seed, tokenizer, data_dir, init, exp.init_mode)
    run_dir = paths.join(workdir, name)
    total = phases_lib.total_steps(phases_lib.plan(rcfg))
    if name == 'trunk' and exp.get('trunk_from'):
      summaries[name] = borrowed_trunk(paths.absolute(exp.trunk_from), order, total, tokenizer)
      print(f'trunk: from {summaries[name]["workdir"]}, not retrained')
      continue
    if run_summary.is_complete(run_dir, total):
      summaries[name] = run_summary.read(run_dir)
      print(f'{name}: complete, skipped')
      continue
    what = f'{name}: phases {" -> ".join(order)}' + (f' from {init}' if init else '')
    if name == 'trunk':  # the branches need its checkpoint
      print(what)
      summaries[name] = _train(rcfg, run_dir, show_progress)
    else:
      pending[name] = (rcfg, run_dir, total, what)

  if n_lanes > 1 and pending:
    from mtspec.cpu import lanes  # side by side on a CPU's cores; only lanes > 1 gets here

    idle = on_idle and (
      lambda done: on_idle(_tree(workdir, tokenizer, plans, {**summaries, **done}))
    )
    summaries.update(lanes.train_branches(pending, n_lanes, workdir, show_progress, idle))
  else:
    for name, (rcfg, run_dir, _, what) in pending.items():
      print(what)
      summaries[name] = _train(rcfg, run_dir, show_progress)
  tree = _tree(workdir, tokenizer, plans, summaries)
  paths.write_json(paths.join(workdir, 'experiment.json'), tree, indent=2)
  return tree
