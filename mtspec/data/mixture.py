"""Block-deterministic mixing of named sources (the idea of Levanter's MixtureDataset).

The example stream of a phase is cut into blocks of `block_size`. Each block holds exactly
`counts[s]` examples of source s (weights apportioned by largest remainder), in an order
shuffled per block. So for any example index the source and the example are a pure function
of (seed, phase name, weights, index): no state, exact per-block shares, exact resume, and
a phase's stream does not depend on any other phase.
"""

import threading
import zlib

import numpy as np

from mtspec.data import shuffle


def stable_seed(*parts) -> int:
  """A seed from names and numbers that is the same in every process (unlike hash())."""
  return zlib.crc32('/'.join(str(p) for p in parts).encode())


def apportion(weights: dict, block_size: int) -> dict:
  """Integer counts per source summing to block_size, proportional to the weights."""
  names = sorted(weights)
  total = sum(weights.values())
  exact = {n: weights[n] / total * block_size for n in names}
  counts = {n: int(np.floor(exact[n])) for n in names}
  by_remainder = sorted(names, key=lambda n: (-(exact[n] - counts[n]), n))
  for n in by_remainder[: block_size - sum(counts.values())]:
    counts[n] += 1
  return counts


class Mixture:
  """Example index -> (source name, k), k = how many earlier examples that source gave."""

  def __init__(self, weights: dict, block_size: int, seed: int):
    self.counts = {n: c for n, c in apportion(weights, block_size).items() if c > 0}
    self.names = sorted(self.counts)
    self.block_size, self.seed = block_size, seed
    slots = np.repeat(np.arange(len(self.names)), [self.counts[n] for n in self.names])
    self.slot_source = slots
    # rank of each slot among the slots of its own source
    self.slot_rank = np.concatenate([np.arange(self.counts[n]) for n in self.names])

  def _order(self, block: int):  # grain's index_shuffle over the block, all at once
    return shuffle.permutation(self.block_size, stable_seed(self.seed, block) % 2**32)

  def locate(self, i: int) -> tuple[str, int]:
    block, r = divmod(int(i), self.block_size)
    j = self._order(block)[r]
    name = self.names[self.slot_source[j]]
    return name, block * self.counts[name] + int(self.slot_rank[j])

  def locate_block(self, block: int) -> list[tuple[str, int]]:
    """locate() of every index of the block."""
    order = self._order(block)
    return [
      (self.names[s], block * self.counts[self.names[s]] + int(rank))
      for s, rank in zip(self.slot_source[order], self.slot_rank[order])
    ]


class MixedSource:
  """Random-access records of a phase's mixture; each source reshuffled every epoch.

  Records are read a block at a time, one read per source, because single ArrayRecord reads
  dominate the pipeline's time otherwise."""

  CACHED_BLOCKS = 4  # grain's read threads work on neighbouring indices

  def __init__(
    self,
    sources: dict,
    weights: dict,
    seed: int,
    phase: str,
    block_size: int,
    shard_index: int = 0,
    shard_count: int = 1,
  ):
    self.mixture = Mixture(weights, block_size, stable_seed(seed, phase))
    self.sources = {
      n: shuffle.ShuffledEpochs(
        sources[n], stable_seed(seed, phase, n) % 2**31, shard_index, shard_count
      )
      for n in self.mixture.names
    }
    self.kinds = {n: sources[n].kind for n in self.mixture.names}
    self.drawn = {n: 0 for n in self.mixture.names}  # examples read so far (for logging)
    self._blocks, self._lock = {}, threading.Lock()

  def __len__(self):
    return 2**62  # infinite: small sources repeat, epoch by epoch

  def __getitem__(self, i) -> dict:
    block, r = divmod(int(i), self.mixture.block_size)
    with self._lock:
      if block not in self._blocks:
        self._blocks[block] = self._read_block(block)
        if len(self._blocks) > self.CACHED_BLOCKS:
          del self._blocks[next(iter(self._blocks))]  # the oldest read
      name, k, record = self._blocks[block][r]
      self.drawn[name] = max(self.drawn[name], k + 1)
    return {'source': name, 'kind': self.kinds[name], **record}

  def _read_block(self, block: int) -> list[tuple]:
    """[(source name, k, record)] for every index of the block."""
    located = self.mixture.locate_block(block)
    out = [None] * len(located)
    for name in self.mixture.names:
      slots = [(r, k) for r, (n, k) in enumerate(located) if n == name]
      records = self.sources[name].get_many([k for _, k in slots])
      for (r, k), record in zip(slots, records):
        out[r] = (name, k, record)
    return out

  def epochs(self) -> dict:
    """Completed passes over each source's shard so far (read-ahead included)."""
    return {n: self.drawn[n] / len(self.sources[n].shard) for n in self.drawn}
