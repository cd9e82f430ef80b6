"""One quick toy experiment per world per test session, shared by the toy and notebook tests.

`quick_run(variant)` runs the quick experiment once per session and variant and returns
(workdir, printed output). The default world's quick run is the quickstart notebook
itself (executed headless, as a Colab user runs it); the other variants run
`python -m mtspec.toy --config=configs/cheese_toy.py:<variant>` in a fresh process.
"""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from conftest import ROOT, run_module

_RUNS = {}


def execute_notebook(name: str, workdir: str) -> list[str]:
  """Runs colabs/<name>.ipynb from colabs/ (as a user would open it) with the quick settings
  on `workdir`; returns the text output of each code cell."""
  import nbformat
  from nbclient import NotebookClient

  nb = nbformat.read(Path(ROOT) / 'colabs' / f'{name}.ipynb', as_version=4)
  NotebookClient(
    nb,
    timeout=300,
    kernel_name='python3',
    resources={'metadata': {'path': str(Path(ROOT) / 'colabs')}},
  ).execute(
    env={
      **{k: v for k, v in os.environ.items() if k != 'PYTHONPATH'},
      'MTSPEC_TOY_VARIANT': 'quick',
      'MTSPEC_TOY_WORKDIR': workdir,
    }
  )
  outs = []
  for cell in nb.cells:
    if cell.cell_type == 'code':
      outs.append(
        ''.join(
          o.get('text', '')
          + o.get('data', {}).get('text/plain', '')
          + ('<image/png>' if 'image/png' in o.get('data', {}) else '')
          for o in cell.get('outputs', [])
        )
      )
  return outs


def quick_run(variant: str = 'quick'):
  if variant not in _RUNS:
    root = tempfile.mkdtemp(prefix='mtspec_toy_')
    atexit.register(shutil.rmtree, root, ignore_errors=True)  # checkpoints fill CI disks
    workdir = os.path.join(root, variant.replace(',', '_'))
    if variant == 'quick':
      out = '\n'.join(execute_notebook('quickstart', workdir))
    else:
      out = run_module(
        ['-m', 'mtspec.toy', f'--config=configs/cheese_toy.py:{variant}', f'--workdir={workdir}'],
        timeout=600,
      ).stdout
    _RUNS[variant] = (workdir, out)
  return _RUNS[variant]
