"""One run at a time per workdir: a second command started in the same workdir (a cell run
twice, a command pasted twice) would train the same runs and overwrite their checkpoints.

Every entry point that writes a workdir holds <workdir>/.lock while it runs (on a
multi-process job, process 0 alone). The lock is the OS's (filelock), so it goes with the
process however it ends. <workdir>/.lock.pid names the holder, for the refusal to quote; a
clean exit removes it, so one left behind names a holder that was killed, and the next run
takes the lock over and says so. (A file of its own: some filelock versions empty the lock
file when they open it.)

A gs:// workdir has no OS locks: its lock and pid files live in a local directory named by
the workdir (mtspec.paths.local_state_dir), so it guards against a second run on this
machine only.
"""

import contextlib
import os
import re

import filelock

from mtspec import paths

LOCK_FILE = '.lock'
OWNER_FILE = '.lock.pid'


class WorkdirInUse(RuntimeError):
  pass


def _owner(path: str) -> int | None:
  try:
    with open(path) as f:
      m = re.fullmatch(r'pid (\d+)\s*', f.read())
  except OSError:
    return None
  return int(m.group(1)) if m else None


def _write(path: str, text: str):
  with open(path + '.tmp', 'w') as f:
    f.write(text)
  os.replace(path + '.tmp', path)  # whole or absent for a reader


@contextlib.contextmanager
def lock(workdir: str, primary: bool = True):
  """Holds <workdir>/.lock (created with workdir) while the with block runs; raises
  WorkdirInUse, naming the holder's pid, if another process holds it. primary=False (every
  process of a multi-process job but process 0): takes nothing."""
  if not primary:
    yield
    return
  paths.makedirs(workdir)
  local = paths.local_state_dir(workdir)  # the workdir itself, unless it is remote
  where = '' if local == workdir else f' (locked on this machine by {local}/{LOCK_FILE})'
  owner_path = os.path.join(local, OWNER_FILE)
  held = filelock.FileLock(os.path.join(local, LOCK_FILE), timeout=0)
  try:
    held.acquire()
  except filelock.Timeout:
    owner = _owner(owner_path)
    raise WorkdirInUse(
      f'workdir {workdir} is in use by '
      f'{f"pid {owner}" if owner else "another process"}{where}; wait for it to '
      'finish or choose another directory'
    ) from None
  try:
    left = _owner(owner_path)
    if left is not None and left != os.getpid():
      print(
        f'workdir {workdir}: pid {left} left its lock behind and no longer holds it; '
        'taking it over',
        flush=True,
      )
    _write(owner_path, f'pid {os.getpid()}')
    yield
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.remove(owner_path)
    held.release()
