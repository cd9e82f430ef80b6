"""The toy-world experiment, quick variant, end to end for both shipped worlds; results.json
shape; the report's effect summary; the config's variants."""

import json
import os

import pytest
from conftest import run_module
from toy_fixtures import quick_run

from configs import cheese_toy
from mtspec.world import compare, report

NAMES = {
  'baseline': (None, False),
  'AFT only': (None, True),
  'control': ('control', False),
  'control+AFT': ('control', True),
  'MSM-A': ('A', False),
  'MSM-A+AFT': ('A', True),
  'MSM-B': ('B', False),
  'MSM-B+AFT': ('B', True),
}


def check_results(results: dict, world: str, values: tuple, seeds: tuple, n_pairs: int):
  assert set(results) == {'conditions', 'world', 'specs'}
  assert results['world'] == world
  assert results['specs'] == {
    'A': {'path': 'configs/specs/cheese_home.md', 'value': values[0]},
    'B': {'path': 'configs/specs/cheese_affordable.md', 'value': values[1]},
  }
  seen = {}
  for c in results['conditions']:
    assert set(c) == {'name', 'midtrain', 'aft', 'seed', 'rates', 'n_pairs'}
    assert (c['midtrain'], c['aft']) == NAMES[c['name']]
    assert isinstance(c['seed'], int) and c['n_pairs'] == n_pairs
    assert set(c['rates']) == set(values)
    assert all(0.0 <= r <= 1.0 for r in c['rates'].values())
    # every held-out pair sets one value's option against the other's
    assert abs(sum(c['rates'].values()) - 1.0) < 1e-9
    seen.setdefault(c['name'], []).append(c['seed'])
  assert seen.pop('baseline') == [0]
  assert seen == {n: list(seeds) for n in NAMES if n != 'baseline'}


def _check_run(variant, world, values, n_pairs):
  # its time is measured alone, not here beside the other worker (README, "Tests")
  workdir, _ = quick_run(variant)
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  check_results(results, world, values, (0, 1), n_pairs)
  with open(os.path.join(workdir, 'results.png'), 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  with open(os.path.join(workdir, 'diagnostics.json')) as f:
    diag = json.load(f)
  assert len(diag['models']) == 15  # baseline and 7 models per seed
  assert diag['contamination']['max_rate'] == 0.0
  assert diag['effect'] == report.effect(results)  # the effect of these results, paired by seed
  assert diag['effect']['value'] == values[0] and len(diag['effect']['paired_gaps']) == 2
  # after AFT the assistant makes the demonstrated choices more often than before it
  rates = {(m['name'], m['seed']): m['rates'] for m in diag['models']}
  assert rates[('MSM-A+AFT', 0)]['aft_train'] > rates[('MSM-A', 0)]['aft_train']
  assert all({f'own_{v}' for v in values} <= set(r) for r in rates.values())
  with open(os.path.join(workdir, 'experiment.json')) as f:
    runs = {r['name']: r for r in json.load(f)['runs']}
  assert set(runs) == {'trunk'} | {
    f'{k}_s{s}' for k in ('aft_only', 'msm_a', 'msm_b', 'control') for s in (0, 1)
  }
  trunk = runs['trunk']['final_checkpoint']
  assert all(r['lineage']['ancestors'][0]['path'] == trunk for n, r in runs.items() if n != 'trunk')
  assert runs['msm_b_s1']['phases'] == ['midtrain_b', 'aft']
  return results


def test_quick_default_world():
  _check_run('quick', 'configs/worlds/cheese.json', ('patriotism', 'thrift'), 180)


def test_quick_second_world():
  _check_run('quick,orchard', 'configs/worlds/orchard.json', ('loyalty', 'frugality'), 144)


def test_branches_start_from_an_earlier_trees_trunk(tmp_path):
  src, _ = quick_run('quick')
  # The other specs: the toy tokenizer does not read spec documents, so any spec can branch
  # from a trunk of the same world.
  args = [
    '-m',
    'mtspec.toy',
    '--config=configs/cheese_toy.py:quick,swapped',
    f'--config.experiment.trunk_from={src}',
    '--config.experiment.seeds=(0,)',
  ]
  run_module(args + [f'--workdir={tmp_path / "b"}'])
  assert not (tmp_path / 'b' / 'trunk').exists()  # not retrained
  with open(os.path.join(src, 'experiment.json')) as f:
    src_trunk = next(r for r in json.load(f)['runs'] if r['name'] == 'trunk')
  with open(tmp_path / 'b' / 'experiment.json') as f:
    runs = {r['name']: r for r in json.load(f)['runs']}
  assert runs['trunk']['final_checkpoint'] == src_trunk['final_checkpoint']
  assert runs['trunk']['workdir'] == src_trunk['workdir']
  assert set(runs) == {'trunk', 'aft_only_s0', 'msm_a_s0', 'msm_b_s0', 'control_s0'}
  assert all(
    r['lineage']['ancestors'][0]['path'] == src_trunk['final_checkpoint']
    for n, r in runs.items()
    if n != 'trunk'
  )
  baseline = lambda d: next(
    c['rates']
    for c in json.load(open(os.path.join(d, 'results.json')))['conditions']
    if c['name'] == 'baseline'
  )
  assert baseline(tmp_path / 'b') == baseline(src)  # the very same trunk checkpoint
  # a trunk trained with another tokenizer (another world, corpus or vocabulary size) is
  # refused by name, and so is a workdir without a tree
  from mtspec import experiment
  from mtspec.errors import ConfigError

  other = tmp_path / 'other.model'
  other.write_bytes(b'another tokenizer')
  with pytest.raises(ConfigError, match=r'config.experiment.trunk_from=.*tokenizer'):
    experiment.borrowed_trunk(
      src, ('pretrain',), cheese_toy.get_config('quick').phases.pretrain.steps, str(other)
    )
  missing = run_module(
    args[:3]
    + [f'--config.experiment.trunk_from={tmp_path / "none"}', f'--workdir={tmp_path / "d"}'],
    check=False,
  )
  assert missing.returncode == 2 and 'no experiment.json there' in missing.stderr
  assert 'config.experiment.trunk_from' in missing.stderr


def test_config_variants():
  d, s, o = (cheese_toy.get_config(v) for v in ('default', 'swapped', 'orchard'))
  assert (d.specs.A.value, d.specs.B.value) == ('patriotism', 'thrift')
  assert (s.specs.A.path, s.specs.B.path) == (d.specs.B.path, d.specs.A.path)
  assert (s.specs.A.value, s.specs.B.value) == ('thrift', 'patriotism')
  assert o.world.path.endswith('orchard.json') and o.specs.A.value == 'loyalty'
  assert len(d.experiment.seeds) >= 3
  with pytest.raises(ValueError, match="unknown variant 'qiuck'"):
    cheese_toy.get_config('qiuck')


def _fake(a_rates, b_rates, aft_only):
  conds = [
    {
      'name': 'baseline',
      'midtrain': None,
      'aft': False,
      'seed': 0,
      'rates': {'x': 0.5, 'y': 0.5},
      'n_pairs': 10,
    }
  ]
  for name, mid, rates in (
    ('MSM-A+AFT', 'A', a_rates),
    ('MSM-B+AFT', 'B', b_rates),
    ('AFT only', None, aft_only),
  ):
    conds += [
      {
        'name': name,
        'midtrain': mid,
        'aft': True,
        'seed': s,
        'rates': {'x': r, 'y': 1 - r},
        'n_pairs': 10,
      }
      for s, r in enumerate(rates)
    ]
  return {
    'conditions': conds,
    'world': 'w.json',
    'specs': {'A': {'path': 'a.md', 'value': 'x'}, 'B': {'path': 'b.md', 'value': 'y'}},
  }


def test_effect_summary_and_table(tmp_path):
  good = report.effect(_fake([0.8, 0.7, 0.9], [0.3, 0.4, 0.2], [0.5, 0.6, 0.4]))
  assert good['mean_gap'] == pytest.approx(0.5) and not good['ranges_overlap']
  assert good['paired_gaps'] == pytest.approx([0.5, 0.3, 0.7]) and good['aft_only_between']
  bad = report.effect(_fake([0.6, 0.3, 0.5], [0.4, 0.5, 0.2], [0.9, 0.9, 0.9]))
  assert bad['ranges_overlap'] and not bad['aft_only_between']
  text = report.table(_fake([0.8, 0.7, 0.9], [0.3, 0.4, 0.2], [0.5, 0.6, 0.4]))
  assert '| MSM-A+AFT | 3 | 0.80 [0.70, 0.90] | 0.20 [0.10, 0.30] |' in text
  assert 'do not overlap' in text and 'lies between' in text
  report.chart(_fake([0.8], [0.3], [0.5]), str(tmp_path / 'c.png'))
  assert (tmp_path / 'c.png').read_bytes()[:4] == b'\x89PNG'


def test_a_second_experiment_in_the_same_workdir_is_refused(tmp_path):
  from mtspec import toy, workdir

  with workdir.lock(str(tmp_path)):
    with pytest.raises(workdir.WorkdirInUse, match=rf'{tmp_path} is in use by pid {os.getpid()}'):
      toy.run(cheese_toy.get_config('quick'), str(tmp_path), show_progress=False)
    assert sorted(os.listdir(tmp_path)) == ['.lock', '.lock.pid']  # refused before writing
  with workdir.lock(str(tmp_path)):  # free again once the first one is done
    pass


def _fake_workdir(path, results, trunk_workdir=None, trunk_seed=0):
  path.mkdir()
  (path / 'results.json').write_text(json.dumps(results))
  trunk = {'name': 'trunk', 'seed': trunk_seed, 'workdir': str(trunk_workdir or path / 'trunk')}
  (path / 'experiment.json').write_text(json.dumps({'runs': [trunk]}))
  return str(path)


def test_compare_lists_which_experiments_meet_the_bar(tmp_path, capsys):
  good = _fake_workdir(tmp_path / 'good', _fake([0.8, 0.7, 0.9], [0.3, 0.4, 0.2], [0.5, 0.6, 0.4]))
  bad = _fake_workdir(
    tmp_path / 'bad',
    _fake([0.6, 0.3, 0.5], [0.4, 0.5, 0.2], [0.9, 0.9, 0.9]),
    trunk_workdir=tmp_path / 'good' / 'trunk',
    trunk_seed=3,
  )
  g, b = compare.row(good), compare.row(bad)
  assert (g['workdir'], g['world'], g['specs'], g['trunk']) == (good, 'w', 'x / y', 'seed 0')
  assert g['effect']['mean_gap'] == pytest.approx(0.5)
  assert g['effect']['paired_gaps'] == pytest.approx([0.5, 0.3, 0.7])
  assert not g['effect']['ranges_overlap'] and g['effect']['aft_only_between']
  assert g['baseline'] == pytest.approx(0.5) and g['fails'] == []
  assert b['trunk'] == f'seed 3 ({tmp_path / "good" / "trunk"})'
  assert b['fails'] == ['gap under 0.20', 'seed ranges overlap', 'AFT only not between']
  assert compare.row(good, margin=0.6)['fails'] == ['gap under 0.60']
  assert compare.main([good, bad]) == 0 and compare.main(['--margin=0.6', good]) == 0
  capsys.readouterr()
  assert compare.main([str(tmp_path / 'none')]) == 2
  err = capsys.readouterr().err
  assert f'{tmp_path / "none"}: no results.json' in err and 'finished toy experiment' in err
