"""Orbax checkpoints: train state (sharded arrays), data-iterator state, metadata.

Saves are asynchronous: the arrays are copied off the device and written in the background
while training continues. The data state is snapshotted at call time, one file per process.
"""

import json
import os

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from mtspec import paths, train_state


class _DataStateSnapshot:
  """What grain's orbax handler needs to write: the iterator state as of save time."""

  def __init__(self, iterator):
    self._state = json.dumps(iterator.get_state()).encode()

  def get_state(self) -> bytes:
    return self._state


class Checkpointer:
  def __init__(self, directory: str, keep: int, keep_steps=(), async_save: bool = True):
    """Keeps the latest `keep` checkpoints, plus those at `keep_steps` (phase boundaries)."""
    pp = ocp.checkpoint_managers
    policy = pp.AnyPreservationPolicy([pp.LatestN(keep), pp.CustomSteps(list(keep_steps))])
    options = ocp.CheckpointManagerOptions(
      create=True, preservation_policy=policy, enable_async_checkpointing=async_save
    )
    self.directory = directory
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
    return self.manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.checkpoint.CheckpointSave(_DataStateSnapshot(data_iterator)),
        meta=ocp.args.JsonSave(meta),
      ),
      force=force,
    )

  def restore(self, step: int, abstract_state, data_iterator=None):
    """Restores onto the shardings carried by `abstract_state` (any mesh)."""
    args = {'state': ocp.args.StandardRestore(abstract_state), 'meta': ocp.args.JsonRestore()}
    if data_iterator is not None:
      args['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self.manager.restore(step, args=ocp.args.Composite(**args))
    return restored['state'], restored['meta']

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.close()


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
  state_dir = os.path.join(directory, str(step), 'state')
  if step not in steps or not paths.isdir(state_dir):
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
  if not paths.isdir(state_dir):
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
  if paths.exists(meta_file):
    meta = paths.read_json(meta_file)
  return restored, meta
