"""The Colab notebooks run headless (nbclient) with the quick settings, on the quick
experiment's workdir, and show what they promise."""
import json
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from toy_fixtures import quick_run

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ('quickstart', 'spec_data_explorer', 'probe_model')


def _execute(name: str, workdir: str, monkeypatch) -> list[str]:
  """Runs colabs/<name>.ipynb from colabs/ (as a user would open it); returns the text output
  of each code cell."""
  monkeypatch.setenv('MTSPEC_TOY_VARIANT', 'quick')
  monkeypatch.setenv('MTSPEC_TOY_WORKDIR', workdir)
  monkeypatch.setenv('PYTHONPATH', str(ROOT))
  nb = nbformat.read(ROOT / 'colabs' / f'{name}.ipynb', as_version=4)
  NotebookClient(nb, timeout=300, kernel_name='python3',
                 resources={'metadata': {'path': str(ROOT / 'colabs')}}).execute()
  outs = []
  for cell in nb.cells:
    if cell.cell_type == 'code':
      outs.append(''.join(o.get('text', '') + o.get('data', {}).get('text/plain', '')
                          + ('<image/png>' if 'image/png' in o.get('data', {}) else '')
                          for o in cell.get('outputs', [])))
  return outs


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_opens_with_install_cell_and_names_no_local_path(name):
  nb = nbformat.read(ROOT / 'colabs' / f'{name}.ipynb', as_version=4)
  code = [c for c in nb.cells if c.cell_type == 'code']
  assert 'pip' in code[0].source and 'requirements.txt' in code[0].source
  assert all('/work/' not in c.source for c in nb.cells)
  assert all(not c.get('outputs') for c in code)  # shipped clean


def test_quickstart_reruns_the_quick_experiment_and_shows_table_and_chart(monkeypatch):
  workdir, _, _ = quick_run('quick')
  with open(os.path.join(workdir, 'results.json')) as f:
    before = json.load(f)
  outs = _execute('quickstart', workdir, monkeypatch)
  text = '\n'.join(outs)
  assert 'trunk: complete, skipped' in text  # finished runs are reused, not retrained
  assert '| MSM-B+AFT | 2 |' in text and 'mean_gap' in text
  assert '<image/png>' in text  # the chart is displayed
  with open(os.path.join(workdir, 'results.json')) as f:
    assert json.load(f) == before  # evaluation is deterministic


def test_spec_data_explorer(monkeypatch):
  workdir, _, _ = quick_run('quick')
  text = '\n'.join(_execute('spec_data_explorer', workdir, monkeypatch))
  for kind in ('facts', 'profile', 'choice', 'chat'):
    assert f'== {kind}:' in text
  assert '== spec A: configs/specs/cheese_home.md (patriotism)' in text
  assert 'held-out pairs (both orders)' in text and 'max rate: 0.0' in text
  assert "caught: held-out item" in text


def test_probe_model(monkeypatch):
  workdir, _, _ = quick_run('quick')
  text = '\n'.join(_execute('probe_model', workdir, monkeypatch))
  assert 'msm_a_s0 (before AFT)' in text and 'log p =' in text
  assert 'With the value in context ->' in text
