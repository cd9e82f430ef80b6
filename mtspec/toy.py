r"""The toy-world MSM experiment, end to end:

  python -m mtspec.toy --config=configs/cheese_toy.py:default --workdir=runs/cheese_toy

1. generates every data set from the world file and the two specs (<workdir>/data);
2. runs the experiment tree (mtspec.experiment.run_tree: the pretraining trunk once, then
   per seed the branches AFT only / MSM-A -> AFT / MSM-B -> AFT / control -> AFT); a re-run
   skips complete runs and resumes the rest;
3. scores every model on the held-out pairs: the trunk (baseline), each branch's
   midtraining-end checkpoint (without AFT) and each branch's final checkpoint (with AFT);
4. writes results.json, diagnostics.json and results.png, and prints the table.
"""

from __future__ import annotations

import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

from mtspec import paths

_CONFIG = config_flags.DEFINE_config_file(
  'config', None, 'configs/cheese_toy.py:<variant>', lock_config=True
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output directory; rerun to resume.')

CONDITIONS = {  # branch kind -> (midtrain phase, midtrain label)
  'aft_only': (None, None),
  'msm_a': ('midtrain_a', 'A'),
  'msm_b': ('midtrain_b', 'B'),
  'control': ('midtrain_control', 'control'),
}


def expand_branches(cfg) -> None:
  """One branch per (condition, seed): <condition>_s<seed>."""
  import ml_collections

  branches = {}
  for seed in cfg.experiment.seeds:
    for kind, (mid, _) in CONDITIONS.items():
      branches[f'{kind}_s{seed}'] = dict(phases=((mid,) if mid else ()) + ('aft',), seed=seed)
  with cfg.unlocked():
    cfg.experiment.branches = ml_collections.ConfigDict(branches)


def models_to_score(cfg, tree: dict) -> list[dict]:
  """(condition fields, checkpoint dir) for the baseline and each branch with/without AFT."""
  out = []
  for r in tree['runs']:
    if r['name'] == 'trunk':
      out.append(
        dict(
          midtrain=None,
          aft=False,
          seed=int(cfg.train.seed),
          checkpoint=r['final_checkpoint'],
          run='trunk',
        )
      )
      continue
    kind, _, seed = r['name'].rpartition('_s')
    mid, label = CONDITIONS[kind]
    if mid:
      phase = paths.read_json(paths.join(r['workdir'], 'phases', f'{mid}.json'))
      out.append(
        dict(midtrain=label, aft=False, seed=int(seed), checkpoint=phase['path'], run=r['name'])
      )
    out.append(
      dict(
        midtrain=label, aft=True, seed=int(seed), checkpoint=r['final_checkpoint'], run=r['name']
      )
    )
  return out


class Scoring:
  """Scores the experiment's models, each checkpoint once, as soon as its run is complete:
  with lanes, while the last lane still trains (mtspec.experiment.run_tree's on_idle). All
  in this process, so the scores are the same whenever they are taken."""

  def __init__(self, cfg, data: dict):
    self.cfg, self.data = cfg, data
    self.values = [cfg.specs.A.value, cfg.specs.B.value]
    self.scored = {}  # checkpoint -> (held-out pair rates, diagnostic rates)
    self.scorer = None

  def _start(self, tokenizer: str):
    from mtspec.data import tokenizer as tok_lib
    from mtspec.world import evaluate

    self.scorer = evaluate.Scorer(self.cfg.model, tok_lib.load(tokenizer), int(self.cfg.eval.batch))
    self.enc = self.scorer.encode(evaluate.eval_items(self.data['eval']))
    self.diag_enc = {}
    if self.cfg.eval.diagnostic_seeds:
      self.diag_enc = evaluate.encode_diagnostics(
        self.scorer,
        evaluate.diagnostic_items(
          self.data['world'], self.data['agents'], self.data['eval'], self.data['aft'], *self.values
        ),
      )
    # every seed gets the one-attribute probes (the second table), the chosen seeds all
    self.own_enc = {k: v for k, v in self.diag_enc.items() if k.startswith('own_')}

  def score(self, tree: dict, show_progress: bool = False, limit: int | None = None) -> int:
    """Scores the tree's models not scored yet (at most limit); returns how many."""
    from tqdm import tqdm

    from mtspec.world import evaluate

    todo = [m for m in models_to_score(self.cfg, tree) if m['checkpoint'] not in self.scored][
      :limit
    ]
    if todo and self.scorer is None:
      self._start(tree['tokenizer'])
    diag_seeds = tuple(self.cfg.eval.diagnostic_seeds)
    for m in tqdm(todo, desc='evaluate', disable=not show_progress):
      params = self.scorer.load(m['checkpoint'])
      with_diag = self.diag_enc if m['seed'] in diag_seeds else self.own_enc
      scores, diag = evaluate.score_with_diagnostics(self.scorer, params, self.enc, with_diag)
      self.scored[m['checkpoint']] = (
        evaluate.choice_rates(scores, self.data['eval'], self.values),
        diag,
      )
    return len(todo)

  def results(self, tree: dict):
    """(conditions, diagnostics) of every model of the tree, in the tree's order."""
    from mtspec.world import report

    conditions, diagnostics = [], []
    for m in models_to_score(self.cfg, tree):
      rates, diag = self.scored[m['checkpoint']]
      name = report.condition_name(m['midtrain'], m['aft'])
      conditions.append(
        {
          'name': name,
          'midtrain': m['midtrain'],
          'aft': m['aft'],
          'seed': m['seed'],
          'rates': rates,
          'n_pairs': len(self.data['eval']),
        }
      )
      if diag:
        diagnostics.append(
          {
            'name': name,
            'seed': m['seed'],
            'run': m['run'],
            'checkpoint': m['checkpoint'],
            'rates': diag,
          }
        )
    return conditions, diagnostics


def run(cfg, workdir: str, show_progress: bool = True) -> dict:
  """The whole experiment; returns results.json's content. Raises
  mtspec.workdir.WorkdirInUse if another experiment runs in workdir."""
  from mtspec import workdir as workdir_lib

  workdir = paths.absolute(workdir)  # orbax wants absolute checkpoint paths
  # a missing bucket fails here, by name, not after the data and the first compilations
  paths.check_bucket(workdir, 'workdir')
  if cfg.data.tfds_data_dir:
    paths.check_bucket(cfg.data.tfds_data_dir, 'config.data.tfds_data_dir')
  with workdir_lib.lock(workdir):  # the toy is a single-process job
    return _run(cfg, workdir, show_progress)


def _run(cfg, workdir: str, show_progress: bool) -> dict:
  import jax

  from mtspec import experiment
  from mtspec.world import build, report

  t0 = time.time()
  # Branches compile the same train step: the persistent cache compiles each shape once. On
  # this machine even for a gs:// workdir: what it holds is compiled for this machine.
  jax.config.update(
    'jax_compilation_cache_dir', paths.join(paths.local_state_dir(workdir), '.jax_cache')
  )
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  data_dir = cfg.data.tfds_data_dir or paths.join(workdir, 'data')
  print(f'data: generating under {data_dir}', flush=True)
  data = build.build(cfg, data_dir)
  with cfg.unlocked():
    for name, uri in data['uris'].items():
      cfg.sources[name].uri = uri
    if data['tokenizer']:
      cfg.data.tokenizer = data['tokenizer']
  expand_branches(cfg)
  t_data = time.time()
  scoring = Scoring(cfg, data)
  # one model a call: the lanes are checked between models, and once the last one is done
  # the rest is scored on all the cores
  tree = experiment.run_tree(
    cfg, workdir, show_progress, on_idle=lambda partial: scoring.score(partial, limit=1)
  )
  t_train = time.time()
  early = len(scoring.scored)  # scored on idle cores while the last lane trained
  if early:
    print(f'evaluate: {early} of the models scored while the last lane trained', flush=True)
  scoring.score(tree, show_progress)
  conditions, diagnostics = scoring.results(tree)
  results = {
    'conditions': conditions,
    'world': cfg.world.path,
    'specs': {k: {'path': cfg.specs[k].path, 'value': cfg.specs[k].value} for k in ('A', 'B')},
  }
  report.write_results(paths.join(workdir, 'results.json'), results)
  timing = {
    'data_s': round(t_data - t0, 1),
    'train_s': round(t_train - t_data, 1),
    'eval_s': round(time.time() - t_train, 1),
    'total_s': round(time.time() - t0, 1),
    'scored_during_training': early,
  }
  report.write_results(
    paths.join(workdir, 'diagnostics.json'),
    {
      'models': diagnostics,
      'effect': report.effect(results),
      'timing': timing,
      'contamination': data['manifest']['contamination'],
    },
  )
  report.chart(results, paths.join(workdir, 'results.png'))
  print(report.table(results))
  print(report.own_table(diagnostics, [cfg.specs.A.value, cfg.specs.B.value]))
  print(
    f'timing: data {timing["data_s"]}s, training {timing["train_s"]}s (scored beside '
    f'the last lane: {early}), evaluation {timing["eval_s"]}s, total {timing["total_s"]}s'
  )
  print(f'results: {workdir}/results.json, chart: {workdir}/results.png')
  return results


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)  # orbax and tfds warn about nothing worth reading
  from mtspec import config as config_lib
  from mtspec import errors
  from mtspec.spec.contamination import ContaminationError
  from mtspec.workdir import WorkdirInUse
  from mtspec.world.schema import WorldError

  try:
    run(_CONFIG.value, _WORKDIR.value)
  except (
    config_lib.ConfigError,
    WorldError,
    FileNotFoundError,
    ValueError,
    WorkdirInUse,
    errors.NotWritable,
    errors.DamagedCheckpoint,
  ) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except errors.CheckpointWriteError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(4)
  except ContaminationError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(3)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  from mtspec.cpu import hugepages  # before anything else: glibc reads tunables at start only

  hugepages.reexec_with_huge_pages()
  from mtspec import cli

  app.run(main, flags_parser=cli.parse_flags)
