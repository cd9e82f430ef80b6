"""Back XLA:CPU's per-step scratch memory with transparent huge pages (Linux, glibc >= 2.35).

XLA:CPU allocates the step's scratch block afresh every step; glibc maps it with mmap and
unmaps it on free, so every step faults its 4 KiB pages in again. With the glibc tunable below,
malloc asks for huge pages instead (README.md, Benchmark; `python -m mtspec.profile_step`
measures it). glibc reads tunables only at process start, hence the re-exec, which each entry
point runs before anything else. Elsewhere it is a no-op.
"""

import os
import sys

TUNABLE = 'glibc.malloc.hugetlb=1'
OPT_OUT = 'MTSPEC_HUGE_PAGES'  # =0 turns the re-exec off
_THP_SETTING = '/sys/kernel/mm/transparent_hugepage/enabled'


def _thp_available() -> bool:
  try:
    with open(_THP_SETTING) as f:
      return '[never]' not in f.read()
  except OSError:
    return False


def reexec_with_huge_pages() -> None:
  """Restarts this command with the tunable set, unless it is set already or cannot help."""
  tunables = os.environ.get('GLIBC_TUNABLES', '')
  if (
    TUNABLE in tunables
    or os.environ.get(OPT_OUT) == '0'
    or sys.platform != 'linux'
    or not _thp_available()
  ):
    return
  env = dict(os.environ, GLIBC_TUNABLES=f'{tunables}:{TUNABLE}' if tunables else TUNABLE)
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def env_without_tunable() -> dict:
  """This process's environment minus the tunable (for a torch subprocess, which it slows)."""
  kept = [t for t in os.environ.get('GLIBC_TUNABLES', '').split(':') if t and t != TUNABLE]
  env = dict(os.environ, **{OPT_OUT: '0'})
  env.pop('GLIBC_TUNABLES', None)
  if kept:
    env['GLIBC_TUNABLES'] = ':'.join(kept)
  return env
