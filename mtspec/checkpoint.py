"""Orbax checkpoints: train state (sharded arrays), data-iterator state, metadata.

Saves are asynchronous: the arrays are copied off the device and written in the background
while training continues. The data state is snapshotted at call time, one file per process.

Faults end a run with one line that names the path: a folder that refuses writes (checked
before the run starts, and at every save, background writes included), a damaged checkpoint.
A run resumes from its newest intact checkpoint; damaged newer ones are moved aside to
<step>.damaged (nothing is deleted), so that training can save those steps again.
"""

import json
import logging
import os
import re
import sys
import threading

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from mtspec import paths, train_state
from mtspec.errors import CheckpointWriteError, DamagedCheckpoint, NotWritable

ITEMS = ('state', 'data', 'meta')
_ITEM_JSON = {'state': 'state/_METADATA', 'meta': 'meta/metadata'}  # what reading each needs


class _DataStateSnapshot:
  """What grain's orbax handler needs to write: the iterator state as of save time."""

  def __init__(self, iterator):
    self._state = json.dumps(iterator.get_state()).encode()

  def get_state(self) -> bytes:
    return self._state


def _reason(e: BaseException) -> str:
  """The first line of the innermost cause: orbax and TensorStore wrap the telling part."""
  while e.__cause__ is not None:
    e = e.__cause__
  lines = str(e).strip().splitlines()
  return (lines[0] if lines else type(e).__name__)[:300]


def _left_behind(e: BaseException | None) -> bool:
  """An error of the reads a failed restore left running: raised in orbax, a TensorStore
  status never raised in Python, or their callback into orbax's closed event loop."""
  if e is None:
    return False
  if e.__traceback__ is None and re.match(r'[A-Z_]+: ', str(e)):
    return True
  if 'Event loop is closed' in str(e):
    return True
  while e is not None:
    tb = e.__traceback__
    while tb is not None:
      if '/orbax/' in tb.tb_frame.f_code.co_filename:
        return True
      tb = tb.tb_next
    e = e.__cause__ or e.__context__
  return False


def _not_left_behind(record) -> bool:
  return not (record.exc_info and _left_behind(record.exc_info[1]))


def _quiet_reads_left_behind():
  """A restore that fails leaves its other reads running; their errors surface later, as
  tracebacks around the one-line error: reported to orbax's closed event loop, raised in its
  coroutines as those are collected, logged by asyncio as never retrieved. From here on,
  those reports (only those) are dropped."""
  logging.getLogger('asyncio').addFilter(_not_left_behind)
  hook = sys.unraisablehook
  if getattr(hook, 'quiet_reads_left_behind', False):
    return

  def quiet(report):
    if not _left_behind(report.exc_value):
      hook(report)

  quiet.quiet_reads_left_behind = True
  sys.unraisablehook = quiet


def ensure_writable(*directories: str):
  """Creates each folder and writes a probe file there: a folder that refuses writes stops
  the run before data preparation and compilation, not at its first save."""
  for directory in directories:
    path = epath.Path(directory)
    probe = path / f'.write-probe-{jax.process_index()}-{os.getpid()}'
    try:
      path.mkdir(parents=True, exist_ok=True)
      probe.write_text('')
      probe.unlink()
    except Exception as e:  # OSError locally; the storage client's own errors on gs://
      raise NotWritable(f'{directory} is not a writable folder: {_reason(e)}') from None


def _json_problem(path: epath.Path) -> str | None:
  try:
    text = path.read_text()
  except FileNotFoundError:
    return 'is missing'
  except OSError as e:
    return f'cannot be read ({_reason(e)})'
  if not text.strip():
    return 'is empty'
  try:
    json.loads(text)
  except ValueError:
    return 'is not valid JSON (cut short?)'
  return None


def damage(step_dir: str, items=ITEMS) -> str | None:
  """What is wrong with a checkpoint's files (`items` must be there), or None if they look
  whole. Array bytes are checked only by reading them (restore)."""
  d = epath.Path(step_dir)
  if not d.is_dir():
    return 'it is not a directory'
  for item in items:
    if not (d / item).is_dir():
      return f'its {item}/ item is missing'
  files = [_ITEM_JSON[item] for item in items if item in _ITEM_JSON]
  if tuple(items) == ITEMS:  # a run's own checkpoint: orbax finalizes it with this file
    files.append('_CHECKPOINT_METADATA')
  if 'data' in items:
    data_files = [f'data/{p.name}' for p in (d / 'data').glob('*.json')]
    if not data_files:
      return 'its data/ item holds no iterator state'
    files += data_files
  for f in files:
    if problem := _json_problem(d / f):
      return f'{f} {problem}'
  return None


def _saved_tree(ckptr, step_dir: str, what: str):
  """The saved state's tree metadata; DamagedCheckpoint (naming `what`) if unreadable."""
  try:
    metadata = ckptr.metadata(os.path.join(step_dir, 'state'))
    tree = metadata.item_metadata.tree if metadata.item_metadata is not None else None
  except Exception as e:
    raise DamagedCheckpoint(f'{what}: its state could not be read: {_reason(e)}') from None
  if tree is None:
    raise DamagedCheckpoint(f'{what}: state/ holds no readable train state')
  return tree


class Checkpointer:
  def __init__(self, directory: str, keep: int, keep_steps=(), async_save: bool = True):
    """Keeps the latest `keep` checkpoints, plus those at `keep_steps` (phase boundaries)."""
    pp = ocp.checkpoint_managers
    policy = pp.AnyPreservationPolicy([pp.LatestN(keep), pp.CustomSteps(list(keep_steps))])
    options = ocp.CheckpointManagerOptions(
      create=True,
      preservation_policy=policy,
      enable_async_checkpointing=async_save,
      # Folders made in the calling thread: a refused mkdir raises in save(). Made in the
      # background, it left the item writers waiting for them (orbax's 20-minute timeout).
      async_options=ocp.AsyncOptions(create_directories_asynchronously=False),
    )
    self.directory = directory
    self._pending = None  # the step whose background write has not been checked yet
    self._failed = False  # a write failure was raised (close need not report it again)
    self.manager = ocp.CheckpointManager(
      directory,
      options=options,
      item_handlers={
        'state': ocp.StandardCheckpointHandler(),
        'data': grain.checkpoint.CheckpointHandler(),
        'meta': ocp.JsonCheckpointHandler(),
      },
    )

  def step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, data_iterator, meta: dict, force: bool = False) -> bool:
    if self._pending is not None:
      self.wait()  # as orbax would, but naming the step that failed
    try:
      saved = self.manager.save(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          data=grain.checkpoint.CheckpointSave(_DataStateSnapshot(data_iterator)),
          meta=ocp.args.JsonSave(meta),
        ),
        force=force,
      )
    except Exception as e:
      self._failed = True
      raise CheckpointWriteError(
        f'checkpoint step {step} could not be written to {self.directory}: {_reason(e)}'
      ) from e
    if saved:
      self._pending = step
    return saved

  def check(self):
    """Raises CheckpointWriteError if a background write has failed; never waits for one."""
    if self._pending is not None and not self.manager.is_saving_in_progress():
      self.wait()

  def wait(self):
    """Waits for the background write; CheckpointWriteError if it failed."""
    try:
      self.manager.wait_until_finished()
    except Exception as e:
      self._failed = True
      raise CheckpointWriteError(
        f'checkpoint step {self._pending} could not be written to {self.directory}: {_reason(e)}'
      ) from e
    finally:
      self._pending = None

  def restore_latest(self, abstract_state):
    """(step, state, meta) of the newest intact checkpoint; None if there is none yet.

    Restores onto the shardings carried by `abstract_state` (any mesh). A damaged newer
    checkpoint is reported (step, path, what is wrong) and, once an older one has restored,
    moved aside to <step>.damaged. If none is intact, DamagedCheckpoint names them all and
    nothing is moved.
    """
    _quiet_reads_left_behind()
    skipped = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      problem = damage(self.step_dir(step))
      if problem is None:
        try:
          restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
            ),
          )
        except Exception as e:
          problem = f'it could not be read: {_reason(e)}'
      if problem is None:
        self._set_aside(skipped)
        return step, restored['state'], restored['meta']
      _say(f'checkpoint step {step} is damaged ({self.step_dir(step)}): {problem}')
      skipped.append((step, problem))
    if skipped:
      raise DamagedCheckpoint(
        f'no intact checkpoint under {self.directory} (nothing was moved or deleted): '
        + '; '.join(f'step {s}: {p}' for s, p in skipped)
      )
    return None

  def restore_data(self, step: int, data_iterator):
    """Positions `data_iterator` where it was when `step` was saved."""
    _quiet_reads_left_behind()
    try:
      self.manager.restore(
        step, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(data_iterator))
      )
    except Exception as e:
      raise DamagedCheckpoint(
        f'checkpoint step {step} is damaged ({self.step_dir(step)}): its data iterator '
        f'state could not be read: {_reason(e)}'
      ) from e

  def _set_aside(self, skipped):
    """Moves damaged checkpoints to <step>.damaged[.n], out of orbax's sight."""
    if not skipped:
      return
    moved = []
    if jax.process_index() == 0:
      for step, _ in skipped:
        src = epath.Path(self.step_dir(step))
        dst, n = src.with_name(f'{step}.damaged'), 1
        while dst.exists():
          dst, n = src.with_name(f'{step}.damaged.{n}'), n + 1
        src.rename(dst)
        moved.append(f'step {step} to {dst}')
    if jax.process_count() > 1:
      ocp.multihost.sync_global_processes('mtspec_checkpoint_set_aside')
    self.manager.reload()
    _say(
      f'resuming from checkpoint step {self.latest_step()}; moved the damaged {", ".join(moved)}'
    )

  def close(self, timeout_s: float = 60.0):
    """Closes the manager; a write still running after timeout_s is left to finish on its
    own (orbax bounds it), so that a failing run cannot hang here."""
    errors = []

    def close():
      try:
        self.manager.close()
      except Exception as e:
        errors.append(e)

    closer = threading.Thread(target=close, name='checkpoint_close', daemon=True)
    closer.start()
    closer.join(timeout_s)
    if closer.is_alive() or (errors and not self._failed):
      why = _reason(errors[0]) if errors else f'still writing after {timeout_s:.0f}s'
      _say(f'checkpoints in {self.directory} did not close cleanly: {why}')


def _say(message: str):
  if jax.process_index() == 0:
    print(message, flush=True)


def load_params(directory: str, step: int | None = None):
  """The params of a checkpoint as host numpy arrays (latest step if none is given).

  Works whatever mesh or process count saved it.
  """
  directory = paths.absolute(directory)  # orbax reads no metadata through a relative path
  steps = (
    sorted(int(d) for d in paths.listdir(directory) if d.isdigit())
    if paths.isdir(directory)
    else []
  )
  if not steps:
    raise FileNotFoundError(f'no checkpoint under {directory}')
  step = steps[-1] if step is None else step
  step_dir = os.path.join(directory, str(step))
  if step not in steps or not paths.isdir(os.path.join(step_dir, 'state')):
    raise FileNotFoundError(
      f'no checkpoint at step {step} under {directory} (steps there: {", ".join(map(str, steps))})'
    )
  if problem := damage(step_dir, items=('state',)):
    raise DamagedCheckpoint(f'checkpoint {step_dir} is damaged: {problem}')
  _quiet_reads_left_behind()
  with ocp.PyTreeCheckpointer() as ckptr:
    saved = _saved_tree(ckptr, step_dir, f'checkpoint {step_dir}')
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), saved)
    try:
      state = ckptr.restore(
        os.path.join(step_dir, 'state'),
        args=ocp.args.PyTreeRestore(
          item={'params': saved['params']},
          restore_args={'params': as_numpy['params']},
          partial_restore=True,
        ),
      )
    except Exception as e:
      raise DamagedCheckpoint(f'checkpoint {step_dir} could not be read: {_reason(e)}') from e
  return state['params'], step


def checkpoint_params(workdir: str, step: int | None = None):
  """The params of one of a run's checkpoints (latest if no step), as numpy arrays."""
  return load_params(os.path.join(workdir, 'checkpoints'), step)[0]


def _shapes(tree) -> dict:
  return {name: tuple(x.shape) for name, x in train_state.flat_params(tree)}


def restore_from_path(step_dir: str, abstract_state: dict, mode: str):
  """Starts a run from another run's checkpoint directory (e.g. <run>/checkpoints/2000).

  mode 'params': only the params (a fresh optimizer); 'full': params and optimizer state.
  The target carries this run's shardings, so the mesh may differ from the one that saved.
  Returns (restored subtree, the checkpoint's lineage meta).
  """
  what = f'init.checkpoint={step_dir!r}'
  if not paths.isdir(os.path.join(step_dir, 'state')):
    raise FileNotFoundError(
      f'{what}: no checkpoint there (expected a step directory such as '
      f'<run>/checkpoints/<step> with a state/ folder)'
    )
  meta_file = epath.Path(step_dir) / 'meta' / 'metadata'
  if problem := damage(step_dir, items=('state', 'meta') if meta_file.exists() else ('state',)):
    raise DamagedCheckpoint(f'{what} is a damaged checkpoint: {problem}')
  keys = ('params',) if mode == 'params' else ('params', 'opt_state')
  target = {k: abstract_state[k] for k in keys}
  _quiet_reads_left_behind()
  with ocp.PyTreeCheckpointer() as ckptr:
    saved_shapes = _shapes(_saved_tree(ckptr, step_dir, what).get('params', {}))
    for name, shape in _shapes(target['params']).items():
      if name not in saved_shapes:
        raise ValueError(f'{what}: parameter {name} is missing there')
      if saved_shapes[name] != shape:
        raise ValueError(
          f'{what}: parameter {name} has shape '
          f'{saved_shapes[name]} in the checkpoint but {shape} in this model'
        )
    try:
      restored = ckptr.restore(
        os.path.join(step_dir, 'state'),
        args=ocp.args.PyTreeRestore(
          item=target,
          restore_args=ocp.checkpoint_utils.construct_restore_args(target),
          partial_restore=True,
        ),
      )
    except Exception as e:
      raise DamagedCheckpoint(f'{what} could not be read: {_reason(e)}') from e
  meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
  return restored, meta
