"""A process's rows of the global batch, built from data shards.

The global batch is cut into `num_shards` fixed slices; shard s reads the strided s-th part of
every source and fills rows [s*b, (s+1)*b). A process owns a contiguous run of shards, so the
global batch is the same whatever the number of processes (1 process x 8 devices equals
2 processes x 4 devices), and every example of a source is read by exactly one shard per epoch.
"""

import json

import numpy as np


class ShardedBatches:
  def __init__(self, make_shard, num_shards: int, process_index: int, process_count: int):
    """make_shard(shard_index) -> (mixed source, iterator of that shard's rows)."""
    if num_shards % process_count:
      raise ValueError(
        f'config.data.num_shards={num_shards} must be a multiple of the {process_count} processes'
      )
    per = num_shards // process_count
    self.shard_ids = list(range(process_index * per, (process_index + 1) * per))
    made = [make_shard(s) for s in self.shard_ids]
    self.mixed = [m for m, _ in made]
    self.iters = [it for _, it in made]

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    parts = [next(it) for it in self.iters]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  def epochs(self) -> dict:
    """Passes over each source, averaged over this process's shards."""
    per_shard = [m.epochs() for m in self.mixed]
    return {n: sum(e[n] for e in per_shard) / len(per_shard) for n in per_shard[0]}

  def get_state(self) -> dict:
    return {'shards': {str(s): it.get_state() for s, it in zip(self.shard_ids, self.iters)}}

  def set_state(self, state):
    if isinstance(state, (bytes, str)):  # as grain's orbax handler hands it back
      state = json.loads(state)
    for s, it in zip(self.shard_ids, self.iters):
      it.set_state(state['shards'][str(s)])

  def start_prefetch(self):
    for it in self.iters:
      if hasattr(it, 'start_prefetch'):
        it.start_prefetch()
