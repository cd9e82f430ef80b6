"""The import-graph check that CI runs (scripts/check_imports.py) passes here and can fail."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / 'scripts' / 'check_imports.py'


def check(package: Path) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, str(CHECK), str(package)], capture_output=True, text=True)


def write_package(tmp_path: Path, files: dict) -> Path:
  pkg = tmp_path / 'pkg'
  pkg.mkdir()
  (pkg / '__init__.py').write_text('')
  for name, text in files.items():
    (pkg / name).parent.mkdir(parents=True, exist_ok=True)
    (pkg / name).write_text(text)
  return pkg


def test_mtspec_imports_run_one_way():
  proc = check(ROOT / 'mtspec')
  assert proc.returncode == 0, proc.stderr


def test_a_cycle_through_a_lazy_import_fails(tmp_path):
  pkg = write_package(
    tmp_path, {'a.py': 'from pkg import b\n', 'b.py': 'def f():\n  from pkg import a\n'}
  )
  proc = check(pkg)
  assert proc.returncode == 1 and 'import cycle: pkg.a <-> pkg.b' in proc.stderr


def test_a_library_module_importing_configs_fails(tmp_path):
  pkg = write_package(tmp_path, {'bench.py': 'from configs import lm\n'})
  proc = check(pkg)
  assert proc.returncode == 1 and 'bench.py: imports configs' in proc.stderr


def test_the_cpu_machinery_imported_at_module_level_fails(tmp_path):
  pkg = write_package(
    tmp_path,
    {
      'cpu/__init__.py': '',
      'cpu/lanes.py': '',
      'trainer.py': 'from pkg.cpu import lanes\n',
      'experiment.py': 'def f():\n  from pkg.cpu import lanes\n',
    },
  )
  proc = check(pkg)
  assert proc.returncode == 1
  assert 'trainer.py: imports pkg.cpu.lanes at module level' in proc.stderr
  assert 'experiment.py' not in proc.stderr  # chosen inside a function: allowed
