"""Orbax checkpoints: train state (sharded arrays), data-iterator state, metadata.

Saves are asynchronous: the arrays are copied off the device and written in the background
while training continues. The data state is snapshotted at call time, one file per process.

A folder that refuses writes ends the run with one line that names it: checked before the
run starts, and at every save, background writes included.
"""

import json
import os
import threading

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from mtspec import train_state
from mtspec.errors import CheckpointWriteError, NotWritable


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

  def restore(self, step: int, abstract_state, data_iterator=None):
    """Restores onto the shardings carried by `abstract_state` (any mesh)."""
    args = {'state': ocp.args.StandardRestore(abstract_state), 'meta': ocp.args.JsonRestore()}
    if data_iterator is not None:
      args['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self.manager.restore(step, args=ocp.args.Composite(**args))
    return restored['state'], restored['meta']

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
  directory = os.path.abspath(directory)  # orbax reads no metadata through a relative path
  steps = (
    sorted(int(d) for d in os.listdir(directory) if d.isdigit()) if os.path.isdir(directory) else []
  )
  if not steps:
    raise FileNotFoundError(f'no checkpoint under {directory}')
  step = steps[-1] if step is None else step
  state_dir = os.path.join(directory, str(step), 'state')
  if step not in steps or not os.path.isdir(state_dir):
    raise FileNotFoundError(
      f'no checkpoint at step {step} under {directory} (steps there: {", ".join(map(str, steps))})'
    )
  with ocp.PyTreeCheckpointer() as ckptr:
    saved = ckptr.metadata(state_dir).item_metadata.tree
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), saved)
    state = ckptr.restore(
      state_dir,
      args=ocp.args.PyTreeRestore(
        item={'params': saved['params']},
        restore_args={'params': as_numpy['params']},
        partial_restore=True,
      ),
    )
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
  state_dir = os.path.join(step_dir, 'state')
  if not os.path.isdir(state_dir):
    raise FileNotFoundError(
      f'init.checkpoint={step_dir!r}: no checkpoint there (expected a '
      f'step directory such as <run>/checkpoints/<step> with a state/ '
      f'folder)'
    )
  keys = ('params',) if mode == 'params' else ('params', 'opt_state')
  target = {k: abstract_state[k] for k in keys}
  with ocp.PyTreeCheckpointer() as ckptr:
    saved = ckptr.metadata(state_dir).item_metadata.tree
    saved_shapes = _shapes(saved.get('params', {}))
    for name, shape in _shapes(target['params']).items():
      if name not in saved_shapes:
        raise ValueError(f'init.checkpoint={step_dir!r}: parameter {name} is missing there')
      if saved_shapes[name] != shape:
        raise ValueError(
          f'init.checkpoint={step_dir!r}: parameter {name} has shape '
          f'{saved_shapes[name]} in the checkpoint but {shape} in this model'
        )
    restored = ckptr.restore(
      state_dir,
      args=ocp.args.PyTreeRestore(
        item=target,
        restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True,
      ),
    )
  meta = {}
  meta_file = os.path.join(step_dir, 'meta', 'metadata')
  if os.path.exists(meta_file):
    with open(meta_file) as f:
      meta = json.load(f)
  return restored, meta
