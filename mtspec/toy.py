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

import json
import os
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'configs/cheese_toy.py:<variant>',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output directory; rerun to resume.')

CONDITIONS = {  # branch kind -> (midtrain phase, midtrain label)
    'aft_only': (None, None), 'msm_a': ('midtrain_a', 'A'), 'msm_b': ('midtrain_b', 'B'),
    'control': ('midtrain_control', 'control')}


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
      out.append(dict(midtrain=None, aft=False, seed=int(cfg.train.seed),
                      checkpoint=r['final_checkpoint'], run='trunk'))
      continue
    kind, _, seed = r['name'].rpartition('_s')
    mid, label = CONDITIONS[kind]
    if mid:
      with open(os.path.join(r['workdir'], 'phases', f'{mid}.json')) as f:
        out.append(dict(midtrain=label, aft=False, seed=int(seed),
                        checkpoint=json.load(f)['path'], run=r['name']))
    out.append(dict(midtrain=label, aft=True, seed=int(seed),
                    checkpoint=r['final_checkpoint'], run=r['name']))
  return out


def score_all(cfg, tree: dict, data: dict, show_progress: bool = True):
  from tqdm import tqdm
  from mtspec.data import tokenizer as tok_lib
  from mtspec.world import evaluate, report
  scorer = evaluate.Scorer(cfg.model, tok_lib.load(tree['tokenizer']), int(cfg.eval.batch))
  values = [cfg.specs.A.value, cfg.specs.B.value]
  enc = scorer.encode(evaluate.eval_items(data['eval']))
  diag_enc = {}
  if cfg.eval.diagnostic_seeds:
    diag_enc = evaluate.encode_diagnostics(scorer, evaluate.diagnostic_items(
        data['world'], data['agents'], data['eval'], data['aft'], *values))
  # every seed gets the one-attribute probes (the second table), the chosen seeds all
  own_enc = {k: v for k, v in diag_enc.items() if k.startswith('own_')}
  diag_seeds = tuple(cfg.eval.diagnostic_seeds)
  conditions, diagnostics = [], []
  for m in tqdm(models_to_score(cfg, tree), desc='evaluate', disable=not show_progress):
    params = scorer.load(m['checkpoint'])
    name = report.condition_name(m['midtrain'], m['aft'])
    with_diag = diag_enc if m['seed'] in diag_seeds else own_enc
    scores, diag = evaluate.score_with_diagnostics(scorer, params, enc, with_diag)
    rates = evaluate.choice_rates(scores, data['eval'], values)
    conditions.append({'name': name, 'midtrain': m['midtrain'], 'aft': m['aft'],
                       'seed': m['seed'], 'rates': rates, 'n_pairs': len(data['eval'])})
    if diag:
      diagnostics.append({'name': name, 'seed': m['seed'], 'run': m['run'],
                          'checkpoint': m['checkpoint'], 'rates': diag})
  return conditions, diagnostics


class WorkdirInUse(RuntimeError):
  pass


def lock_workdir(workdir: str):
  """An exclusive lock on <workdir>/.lock: a second experiment started in the same workdir
  (a cell run twice, a command pasted twice) would train the same runs and overwrite their
  checkpoints. Returns the open lock file; the lock goes when it is closed or the process ends."""
  import fcntl
  f = open(os.path.join(workdir, '.lock'), 'a+')
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    f.seek(0)
    owner = f.read().strip() or 'another process'
    f.close()
    raise WorkdirInUse(f'workdir {workdir} is in use by {owner}; wait for it to finish or '
                       'use another --workdir') from None
  f.truncate(0)
  f.write(f'pid {os.getpid()}')
  f.flush()
  return f


def run(cfg, workdir: str, show_progress: bool = True) -> dict:
  """The whole experiment; returns results.json's content."""
  import jax
  from mtspec import experiment
  from mtspec.world import build, report
  t0 = time.time()
  workdir = os.path.abspath(workdir)  # orbax wants absolute checkpoint paths
  os.makedirs(workdir, exist_ok=True)
  lock = lock_workdir(workdir)  # held while this experiment runs  # noqa: F841
  # Branches compile the same train step: the persistent cache compiles each shape once.
  jax.config.update('jax_compilation_cache_dir', os.path.join(workdir, '.jax_cache'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  data_dir = cfg.data.tfds_data_dir or os.path.join(workdir, 'data')
  print(f'data: generating under {data_dir}', flush=True)
  data = build.build(cfg, data_dir)
  with cfg.unlocked():
    for name, uri in data['uris'].items():
      cfg.sources[name].uri = uri
    if data['tokenizer']:
      cfg.data.tokenizer = data['tokenizer']
  expand_branches(cfg)
  t_data = time.time()
  tree = experiment.run_tree(cfg, workdir, show_progress)
  t_train = time.time()
  conditions, diagnostics = score_all(cfg, tree, data, show_progress)
  results = {'conditions': conditions, 'world': cfg.world.path,
             'specs': {k: {'path': cfg.specs[k].path, 'value': cfg.specs[k].value}
                       for k in ('A', 'B')}}
  report.write_results(os.path.join(workdir, 'results.json'), results)
  timing = {'data_s': round(t_data - t0, 1), 'train_s': round(t_train - t_data, 1),
            'eval_s': round(time.time() - t_train, 1), 'total_s': round(time.time() - t0, 1)}
  report.write_results(os.path.join(workdir, 'diagnostics.json'),
                       {'models': diagnostics, 'effect': report.effect(results),
                        'timing': timing, 'contamination': data['manifest']['contamination']})
  report.chart(results, os.path.join(workdir, 'results.png'))
  print(report.table(results))
  print(report.own_table(diagnostics, [cfg.specs.A.value, cfg.specs.B.value]))
  print(f"timing: data {timing['data_s']}s, training {timing['train_s']}s, evaluation "
        f"{timing['eval_s']}s, total {timing['total_s']}s")
  print(f'results: {workdir}/results.json, chart: {workdir}/results.png')
  return results


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)  # orbax and tfds warn about nothing worth reading
  from mtspec import config as config_lib
  from mtspec.spec.contamination import ContaminationError
  from mtspec.world.schema import WorldError
  try:
    run(_CONFIG.value, _WORKDIR.value)
  except (config_lib.ConfigError, WorldError, FileNotFoundError, ValueError,
          WorkdirInUse) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except ContaminationError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(3)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  from mtspec import hugepages
  hugepages.reexec_with_huge_pages()
  app.run(main)
