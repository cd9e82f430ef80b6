"""The Colab notebooks run headless (nbclient) with the quick settings, on the quick
experiment's workdir, and show what they promise."""

import json
import os
from pathlib import Path

import nbformat
import pytest
from toy_fixtures import execute_notebook, quick_run

from mtspec.world import report

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ('quickstart', 'spec_data_explorer', 'probe_model')


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_opens_with_install_cell_and_names_no_local_path(name):
  nb = nbformat.read(ROOT / 'colabs' / f'{name}.ipynb', as_version=4)
  code = [c for c in nb.cells if c.cell_type == 'code']
  # installs the package with pip (Colab) or uses the installed one; never edits sys.path
  assert "'pip', 'install'" in code[0].source and 'sys.path' not in code[0].source
  assert all('/work/' not in c.source for c in nb.cells)
  assert all(not c.get('outputs') for c in code)  # shipped clean


def test_quickstart_runs_the_quick_experiment_and_shows_table_and_chart():
  # the quick default world's run of the suite is this notebook (tests/toy_fixtures.py)
  workdir, text = quick_run('quick')
  with open(os.path.join(workdir, 'experiment.json')) as f:
    trunk = next(r for r in json.load(f)['runs'] if r['name'] == 'trunk')
  assert trunk['workdir'] == os.path.join(workdir, 'trunk')  # trained here, from nothing
  # the notebook's last cell checked that results.json holds the results it showed
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  assert report.table(results) in text  # the table of these results is shown
  assert '<image/png>' in text  # and the chart


def test_spec_data_explorer():
  workdir, _ = quick_run('quick')
  text = '\n'.join(execute_notebook('spec_data_explorer', workdir))
  for kind in ('facts', 'profile', 'choice', 'chat'):
    assert f'== {kind}:' in text
  assert '== spec A: configs/specs/cheese_home.md (patriotism)' in text
  assert 'held-out pairs (both orders)' in text and 'max rate: 0.0' in text
  assert 'caught: held-out item' in text


def test_probe_model():
  workdir, _ = quick_run('quick')
  text = '\n'.join(execute_notebook('probe_model', workdir))
  assert 'msm_a_s0 (before AFT)' in text and 'log p =' in text
  assert 'With the value in context ->' in text
