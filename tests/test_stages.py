"""Linked stages: kill-anywhere resume, branches from a trunk, lineage, restore errors, NaN."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import ROOT, run_module
from test_phases import two_source_config

from mtspec import checkpoint, trainer


def assert_same_params(a, b, atol=0.0):
  """Equality (bitwise by default), keyed by parameter name (restored trees key layers by
  string)."""
  from mtspec.train_state import flat_params

  fa, fb = dict(flat_params(a)), dict(flat_params(b))
  assert fa.keys() == fb.keys()
  for name in fa:
    np.testing.assert_allclose(
      np.asarray(fa[name]), np.asarray(fb[name]), rtol=0, atol=atol, err_msg=name
    )


CMD = ['-m', 'mtspec.main', '--config=tests/configs/two_phase.py']


def _start(workdir):
  return subprocess.Popen(
    [sys.executable, *CMD, f'--workdir={workdir}'],
    cwd=ROOT,
    env={**os.environ, 'PYTHONPATH': ROOT},
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )


def _kill_when(proc, condition, timeout=300) -> bool:
  """SIGKILLs proc as soon as condition() holds; True if it was still running then."""
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None:
    if condition():
      proc.send_signal(signal.SIGKILL)
      proc.wait()
      return True
    time.sleep(0.001)
  proc.wait()
  return False


def test_kill_anywhere_loses_nothing(tmp_path):
  full, killed = tmp_path / 'full', tmp_path / 'killed'
  run_module([*CMD, f'--workdir={full}'])
  ckpts = killed / 'checkpoints'
  saving = lambda: ckpts.exists() and any('tmp' in d for d in os.listdir(ckpts))
  at_boundary = lambda: (killed / 'phases' / 'pretrain.json').exists()
  metrics = killed / 'metrics.jsonl'
  lines = lambda: sum(1 for _ in open(metrics)) if metrics.exists() else 0
  start_lines = [0]
  k = random.Random(7).randint(1, 4)  # a random point mid-run: after k more logged steps
  random_moment = lambda: lines() >= start_lines[0] + k
  kills = []
  for name, condition in [
    ('during a checkpoint save', saving),
    ('right at the phase boundary', at_boundary),
    ('at a random moment', random_moment),
  ]:
    start_lines[0] = lines()
    kills.append((name, _kill_when(_start(killed), condition)))
  assert all(hit for _, hit in kills), kills  # each kill landed while the run was going
  run_module([*CMD, f'--workdir={killed}'])  # the same command: resumes to the end
  assert_same_params(
    checkpoint.checkpoint_params(str(killed)), checkpoint.checkpoint_params(str(full))
  )
  # the boundary checkpoint is kept permanently, whatever keep_ckpts says
  assert (killed / 'checkpoints' / '14').exists() and (full / 'checkpoints' / '14').exists()


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('tree')
  import ml_collections

  from mtspec import experiment

  c = two_source_config(tmp)
  c.experiment = ml_collections.ConfigDict(
    dict(
      trunk=('one',),
      init_mode='params',
      branches=ml_collections.ConfigDict(
        {'b_two': dict(phases=('two',), seed=1), 'b_one_more': dict(phases=('one',), seed=2)}
      ),
    )
  )
  result = experiment.run_tree(c, str(tmp / 'exp'), show_progress=False)
  return c, tmp / 'exp', result


def test_branch_starts_from_the_trunk_exact_params(tree):
  from mtspec import experiment

  c, root, result = tree
  trunk_final = [r for r in result['runs'] if r['name'] == 'trunk'][0]['final_checkpoint']
  bcfg = experiment.run_config(
    c, 'b_two', ('two',), 1, result['tokenizer'], str(root / 'data'), trunk_final, 'params'
  )
  run = trainer.Run(bcfg, str(root / 'probe'))
  state = run.start().state
  want = checkpoint.checkpoint_params(str(root / 'trunk'))
  assert_same_params(state['params'], want)


def test_full_mode_branch_keeps_adam_moments_but_follows_its_own_schedule(tree):
  import optax

  from mtspec import experiment

  c, root, result = tree
  trunk_final = [r for r in result['runs'] if r['name'] == 'trunk'][0]['final_checkpoint']
  bcfg = experiment.run_config(
    c, 'b_two', ('two',), 1, result['tokenizer'], str(root / 'data'), trunk_final, 'full'
  )
  opt_state = trainer.Run(bcfg, str(root / 'probe_full')).start().state['opt_state']
  nodes = lambda kind: [
    x
    for x in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, kind))
    if isinstance(x, kind)
  ]
  (adam,) = nodes(optax.ScaleByAdamState)
  assert int(adam.count) == 4  # the trunk's 4 steps of moments, carried over
  assert any(np.abs(np.asarray(m)).max() > 0 for m in jax.tree.leaves(adam.mu))
  # the LR schedule restarts with the branch's own phases (it read the trunk's step before)
  assert [int(s.count) for s in nodes(optax.ScaleByScheduleState)] == [0]


def test_every_final_checkpoint_leads_back_to_the_trunk(tree):
  _, root, result = tree
  with open(root / 'experiment.json') as f:
    summary = json.load(f)
  runs = {r['name']: r for r in summary['runs']}
  assert set(runs) == {'trunk', 'b_two', 'b_one_more'}
  trunk_ckpt = runs['trunk']['final_checkpoint']
  for name in ('b_two', 'b_one_more'):
    lineage = runs[name]['lineage']
    assert lineage['run'] == name and lineage['step'] == 4
    assert lineage['ancestors'][0]['run'] == 'trunk'
    assert lineage['ancestors'][0]['path'] == trunk_ckpt
    for key in ('config_hash', 'sources', 'git_commit', 'parent', 'phase'):
      assert lineage[key], key
  assert runs['trunk']['lineage']['ancestors'] == []


def test_rerun_skips_complete_runs(tree, capsys):
  from mtspec import experiment

  c, root, _ = tree
  before = os.path.getmtime(root / 'trunk' / 'summary.json')
  experiment.run_tree(c, str(root), show_progress=False)
  assert 'trunk: complete, skipped' in capsys.readouterr().out
  assert os.path.getmtime(root / 'trunk' / 'summary.json') == before


def test_restore_onto_a_different_mesh(tree):
  _, root, result = tree
  out = run_module(
    ['tests/mesh_restore_check.py', str(root / 'trunk')],
    env={'XLA_FLAGS': '--xla_force_host_platform_device_count=8'},
  )
  r = json.loads(out.stdout.strip().splitlines()[-1])
  assert r['devices'] == 8 and r['w_up_spec'] == "P('fsdp', 'tensor')"
  assert r['max_diff'] == 0.0


def test_missing_parent_and_shape_mismatch_are_named(tree, tmp_path):
  c, root, result = tree
  c = c.copy_and_resolve_references()
  with c.unlocked():
    del c['experiment']
  c.data.tokenizer = result['tokenizer']
  c.init.checkpoint = str(tmp_path / 'nowhere' / 'checkpoints' / '4')
  with pytest.raises(FileNotFoundError, match=r'init.checkpoint=.*nowhere.*no checkpoint there'):
    trainer.Run(c, str(tmp_path / 'a')).start()
  c.init.checkpoint = str(root / 'trunk' / 'checkpoints' / '4')
  c.model.d_ff = 96
  with pytest.raises(
    ValueError,
    match=r'parameter layers.0.mlp.w_down has shape \(128, 64\) '
    r'in the checkpoint but \(96, 64\) in this model',
  ):
    trainer.Run(c, str(tmp_path / 'b')).start()


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
  from mtspec import defaults

  c = two_source_config(tmp_path)
  c.phases.one.steps = 6
  defaults.new_phase(c, 'explode', 10, {'alpha': 1.0}, lr=1e35)
  c.phase_order = ('one', 'explode')
  c.train.ckpt_every = 2
  workdir = tmp_path / 'run'
  with pytest.raises(trainer.NonFiniteLoss, match=r"at step (\d+) \(phase 'explode'\)") as err:
    trainer.train(c, str(workdir), show_progress=False)
  bad_step = int(err.value.args[0].split('at step ')[1].split()[0])
  steps = sorted(int(d) for d in os.listdir(workdir / 'checkpoints') if d.isdigit())
  assert steps[-1] < bad_step  # nothing at or after the failure was saved
  params = checkpoint.checkpoint_params(str(workdir), steps[-1])
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))
  rows = [json.loads(l) for l in open(workdir / 'metrics.jsonl')]
  assert all(np.isfinite(r['loss']) for r in rows)
