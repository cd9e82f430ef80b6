"""One run at a time per workdir: a second command started in the same workdir (a cell run
twice, a command pasted twice) would train the same runs and overwrite their checkpoints.

Every entry point that writes a workdir holds <workdir>/.lock while it runs (on a
multi-process job, process 0 alone). The lock is the OS's (filelock), so it goes with the
process however it ends; the file names the holder's pid, which a refusal quotes and which
a clean exit clears. A pid left in the file is a holder that was killed: the next run takes
the lock over and says so.
"""
import contextlib
import os
import re

import filelock

LOCK_FILE = '.lock'


class WorkdirInUse(RuntimeError):
  pass


def _owner(text: str) -> int | None:
  m = re.fullmatch(r'pid (\d+)\s*', text)
  return int(m.group(1)) if m else None


def _read(path: str) -> str:
  try:
    with open(path) as f:
      return f.read()
  except OSError:
    return ''


@contextlib.contextmanager
def lock(workdir: str, primary: bool = True):
  """Holds <workdir>/.lock (created with workdir) while the with block runs; raises
  WorkdirInUse, naming the holder's pid, if another process holds it. primary=False (every
  process of a multi-process job but process 0): takes nothing."""
  if not primary:
    yield
    return
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)

  def claim(fd: int):  # runs holding the OS lock, before anyone can read our pid
    left = _owner(os.pread(fd, 64, 0).decode(errors='replace'))
    if left is not None and left != os.getpid():
      print(f'workdir {workdir}: pid {left} left its lock behind and no longer holds it; '
            'taking it over', flush=True)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'pid {os.getpid()}'.encode(), 0)

  held = filelock.FileLock(path, timeout=0, on_acquired=claim)
  try:
    held.acquire()
  except filelock.Timeout:
    owner = _owner(_read(path))
    raise WorkdirInUse(f'workdir {workdir} is in use by '
                       f'{f"pid {owner}" if owner else "another process"}; wait for it to '
                       'finish or choose another directory') from None
  try:
    yield
  finally:
    with contextlib.suppress(OSError):  # still ours: a pid left there means a killed holder
      os.truncate(path, 0)
    held.release()
