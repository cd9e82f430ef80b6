"""The command line: generate then inspect, as a user would run them."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args):
  return subprocess.run(
    [sys.executable, '-m', 'mtspec.spec', *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )


def test_generate_then_inspect(tmp_path):
  out = tmp_path / 'cheese'
  g = _cli(
    'generate',
    '--spec=configs/specs/cheese_home.md',
    f'--out={out}',
    '--backend=template',
    '--set',
    'home_country=Norland',
    '--domains=2',
    '--subdomains=2',
    '--assertions=2',
    '--doc-types=3',
    '--ideas=1',
    '--aft=5',
    '--eval=7',
  )
  assert g.returncode == 0, g.stderr
  assert 'documents: 24 text records' in g.stdout and 'aft: 5 chat' in g.stdout
  assert 'eval: 7 eval' in g.stdout and 'contamination: max rate 0.000' in g.stdout
  i = _cli('inspect', f'--out={out}', '--samples=1')
  assert i.returncode == 0, i.stderr
  assert 'backend template model template-v1 seed 0' in i.stdout
  assert re.search(r'documents\s+text\s+24 records', i.stdout)
  type_lines = [l for l in i.stdout.splitlines() if l.startswith('  ') and ' docs ' in l]
  assert len(type_lines) >= 3 and sum(int(l.split()[-4]) for l in type_lines) == 24
  assert 'Norland' in i.stdout and 'Valdoria' not in i.stdout
  assert 'aft sample:' in i.stdout and 'eval sample:' in i.stdout


def test_inspect_missing_output_is_an_error(tmp_path):
  r = _cli('inspect', f'--out={tmp_path / "nope"}')
  assert r.returncode == 1 and 'manifest.json' in r.stderr
