"""Orbax checkpoints: train state (sharded arrays), data-iterator state, metadata.

Saves are asynchronous: the arrays are copied off the device and written in the background
while training continues. The data state is snapshotted at call time, one file per process.
"""
import json

import grain
import jax
import orbax.checkpoint as ocp


class _DataStateSnapshot:
  """What grain's orbax handler needs to write: the iterator state as of save time."""

  def __init__(self, iterator):
    self._state = json.dumps(iterator.get_state()).encode()

  def get_state(self) -> bytes:
    return self._state


class Checkpointer:

  def __init__(self, directory: str, keep: int, async_save: bool = True):
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self.directory = directory
    self.manager = ocp.CheckpointManager(
        directory, options=options,
        item_handlers={'state': ocp.StandardCheckpointHandler(),
                       'data': grain.checkpoint.CheckpointHandler(),
                       'meta': ocp.JsonCheckpointHandler()})

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state, data_iterator, meta: dict, force: bool = False) -> bool:
    return self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.checkpoint.CheckpointSave(_DataStateSnapshot(data_iterator)),
        meta=ocp.args.JsonSave(meta)), force=force)

  def restore(self, step: int, abstract_state, data_iterator=None):
    """Restores onto the shardings carried by `abstract_state` (any mesh)."""
    args = {'state': ocp.args.StandardRestore(abstract_state),
            'meta': ocp.args.JsonRestore()}
    if data_iterator is not None:
      args['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self.manager.restore(step, args=ocp.args.Composite(**args))
    return restored['state'], restored['meta']

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.close()


def is_primary() -> bool:
  return jax.process_index() == 0


def load_params(directory: str, step: int | None = None):
  """The params of a checkpoint as numpy arrays (latest step if none is given)."""
  import numpy as np
  with ocp.CheckpointManager(directory, item_handlers={
      'state': ocp.StandardCheckpointHandler()}) as manager:
    step = manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'no checkpoint under {directory}')
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return jax.tree.map(np.asarray, state['state']['params']), step
