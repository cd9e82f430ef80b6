"""Experiment trees: a shared trunk, then branches that each start from the trunk's end.

config.experiment:
  trunk       phase names the trunk runs (e.g. ('pretrain',))
  branches    name -> {phases: (...), seed: int}; each starts from the trunk's final checkpoint
  init_mode   params | full: what a branch takes from the trunk
  trunk_from  optional: the workdir of an earlier tree whose complete trunk this tree's
              branches start from (nothing is retrained; its phases and tokenizer must match)
  lanes       branches trained side by side, one process each (mtspec.lanes); 0 (default):
              one per CPU core on a CPU, at most 4; 1 on an accelerator

One command runs the whole tree; the trunk trains once; a rerun skips complete runs and
resumes incomplete ones. experiment.json lists every run with its final checkpoint and lineage.
"""
import hashlib
import json
import os

from mtspec import lanes as lanes_lib, phases as phases_lib, trainer
from mtspec.errors import ConfigError


def run_config(cfg, name: str, phase_order, seed: int, tokenizer: str, data_dir: str,
               init_checkpoint: str = '', init_mode: str = 'params'):
  c = cfg.copy_and_resolve_references()
  with c.unlocked():
    del c['experiment']
    c.run_name, c.phase_order = name, tuple(phase_order)
    c.train.seed = seed
    c.data.tokenizer, c.data.tfds_data_dir = tokenizer, data_dir
    c.init.checkpoint, c.init.mode = init_checkpoint, init_mode
  return c


def _complete(workdir: str, total_steps: int) -> bool:
  path = os.path.join(workdir, 'summary.json')
  if not os.path.exists(path):
    return False
  with open(path) as f:
    return json.load(f).get('step') == total_steps


def _final_lineage(summary: dict) -> dict:
  with open(os.path.join(summary['final_checkpoint'], 'meta', 'metadata')) as f:
    return json.load(f)


def _sha256(path: str) -> str:
  with open(path, 'rb') as f:
    return hashlib.sha256(f.read()).hexdigest()


def borrowed_trunk(src: str, phases: tuple, total_steps: int, tokenizer: str) -> dict:
  """The summary of the complete trunk of the tree in workdir `src`, checked against this
  tree's trunk phases, step count and tokenizer (a trunk read with another tokenizer would
  read every token wrong)."""
  key = 'config.experiment.trunk_from'
  path = os.path.join(src, 'experiment.json')
  if not os.path.exists(path):
    raise ConfigError(f'{key}={src!r}: no experiment.json there (run an experiment tree in '
                      'that workdir first)')
  with open(path) as f:
    tree = json.load(f)
  trunk = next((r for r in tree['runs'] if r['name'] == 'trunk'), None)
  if trunk is None or tuple(trunk['phases']) != phases:
    raise ConfigError(f'{key}={src!r}: its trunk ran phases '
                      f'{trunk and trunk["phases"]}, this config\'s trunk runs {list(phases)}')
  if not _complete(trunk['workdir'], total_steps):
    raise ConfigError(f'{key}={src!r}: its trunk ({trunk["workdir"]}) has not completed the '
                      f'{total_steps} steps this config\'s trunk runs')
  if tokenizer and _sha256(tree['tokenizer']) != _sha256(tokenizer):
    raise ConfigError(f'{key}={src!r}: its trunk was trained with tokenizer '
                      f'{tree["tokenizer"]}, which differs from this tree\'s {tokenizer} '
                      '(another world, corpus or vocabulary size?)')
  with open(os.path.join(trunk['workdir'], 'summary.json')) as f:
    return dict(json.load(f), workdir=trunk['workdir'])


def shared_tokenizer(cfg, workdir: str, data_dir: str) -> str:
  """One tokenizer for every run of the tree, trained on every source the tree names."""
  if cfg.data.tokenizer:
    return cfg.data.tokenizer
  names = sorted({s for p in cfg.phases.values() for s, w in dict(p.weights).items() if w > 0})
  sources = trainer.open_sources(cfg, names, data_dir)
  return trainer.load_or_train_tokenizer(cfg, workdir, sources).path


def _summary(run_dir: str) -> dict:
  with open(os.path.join(run_dir, 'summary.json')) as f:
    return json.load(f)


def _train(rcfg, run_dir: str, show_progress: bool) -> dict:
  return {k: v for k, v in trainer.train(rcfg, run_dir, show_progress).items() if k != 'state'}


def _train_branches(pending: dict, n_lanes: int, workdir: str, show_progress: bool,
                    on_idle=None) -> dict:
  """name -> (config, workdir, steps, description): in n_lanes lanes side by side
  (mtspec.lanes), else one after another in this process. n_lanes comes from the whole tree,
  not from what is pending, so a resumed branch trains on as many cores as it would have.
  on_idle({name: summary} of the runs complete so far): see run_tree. Returns name -> summary."""
  if n_lanes > 1 and pending:
    for *_, what in pending.values():
      print(what)
    steps = {name: p[2] for name, p in pending.items()}
    jobs = [[(name, *pending[name][:2]) for name in lane]
            for lane in lanes_lib.deal(steps, n_lanes)]
    complete = {}  # a complete run stays complete: read each summary once

    def done():
      complete.update({name: _summary(p[1]) for name, p in pending.items()
                       if name not in complete and _complete(p[1], p[2])})
      return complete
    lanes_lib.run_lanes(jobs, n_lanes, os.path.join(workdir, '.lanes'), show_progress,
                        on_idle and (lambda: on_idle(done())))
    return {name: _summary(p[1]) for name, p in pending.items()}
  summaries = {}
  for name, (rcfg, run_dir, _, what) in pending.items():
    print(what)
    summaries[name] = _train(rcfg, run_dir, show_progress)
  return summaries


def _tree(workdir: str, tokenizer: str, plans: dict, summaries: dict) -> dict:
  runs = [{'name': name, 'phases': list(plans[name][0]), 'seed': plans[name][1],
           'workdir': s.get('workdir', os.path.join(workdir, name)),
           'final_checkpoint': s['final_checkpoint'], 'lineage': _final_lineage(s)}
          for name, s in summaries.items()]
  return {'workdir': workdir, 'tokenizer': tokenizer, 'runs': runs}


def run_tree(cfg, workdir: str, show_progress: bool = True, on_idle=None) -> dict:
  """Trains the trunk, then the branches; returns the tree (experiment.json's content).
  on_idle(tree of the runs complete so far): called again and again, on the cores of the
  lanes that have finished, while the last lanes still train (mtspec.lanes)."""
  exp = cfg.experiment
  if not exp.trunk:
    raise ConfigError('config.experiment.trunk is empty: name the phases the trunk runs')
  os.makedirs(workdir, exist_ok=True)
  data_dir = cfg.data.tfds_data_dir or os.path.join(workdir, 'data')
  tokenizer = shared_tokenizer(cfg, workdir, data_dir)
  plans = {'trunk': (tuple(exp.trunk), cfg.train.seed)}
  plans.update({name: (tuple(b.phases), b.get('seed', cfg.train.seed))
                for name, b in exp.branches.items()})
  for name, (order, _) in plans.items():  # validate every run before training any of them
    with cfg.unlocked():
      probe = run_config(cfg, name, order, 0, tokenizer, data_dir)
    phases_lib.plan(probe)

  summaries, pending = {}, {}
  for name, (order, seed) in plans.items():
    init = '' if name == 'trunk' else summaries['trunk']['final_checkpoint']
    rcfg = run_config(cfg, name, order, seed, tokenizer, data_dir, init, exp.init_mode)
    run_dir = os.path.join(workdir, name)
    total = phases_lib.total_steps(phases_lib.plan(rcfg))
    if name == 'trunk' and exp.get('trunk_from'):
      summaries[name] = borrowed_trunk(os.path.abspath(exp.trunk_from), order, total, tokenizer)
      print(f'trunk: from {summaries[name]["workdir"]}, not retrained')
      continue
    if _complete(run_dir, total):
      summaries[name] = _summary(run_dir)
      print(f'{name}: complete, skipped')
      continue
    what = f'{name}: phases {" -> ".join(order)}' + (f' from {init}' if init else '')
    if name == 'trunk':  # the branches need its checkpoint
      print(what)
      summaries[name] = _train(rcfg, run_dir, show_progress)
    else:
      pending[name] = (rcfg, run_dir, total, what)
  partial = {}  # the tree of the runs complete so far, rebuilt only when one more is

  def idle(done: dict):
    if partial.get('names') != set(done):
      partial.update(names=set(done), tree=_tree(workdir, tokenizer, plans, summaries | done))
    on_idle(partial['tree'])
  summaries.update(_train_branches(
      pending, lanes_lib.lane_count(exp.get('lanes', 0), len(exp.branches)), workdir,
      show_progress, on_idle and idle))
  tree = _tree(workdir, tokenizer, plans, summaries)
  with open(os.path.join(workdir, 'experiment.json'), 'w') as f:
    json.dump(tree, f, indent=2)
  return tree
