"""Whole permutations equal to grain's `index_shuffle`, computed at once.

`grain.experimental.index_shuffle(i, max_index, seed, rounds)` permutes [0, max_index] with a
Simon-style cipher on at least 16 bits, walking the cycle until it lands inside the range. For
a range much smaller than 2**16 each call walks ~2**16 / n steps, which makes a per-index
shuffle of a small block the data pipeline's main cost.
`permutation(n, seed)` gives `[index_shuffle(i, n - 1, seed, rounds) for i in range(n)]` for
n <= 2**16 (`FAST_MAX`) with numpy: the cipher over all 2**16 values, then the walk by pointer doubling.
Same numbers as grain (tests/test_data.py compares them), so the data order does not change.
"""

import functools

import grain
import numpy as np

_BITS = 16  # grain's smallest cipher block: every range up to FAST_MAX uses it
FAST_MAX = 1 << _BITS
_MASK32 = 0xFFFFFFFF


def _seed_seq(seed: int, n: int) -> list[int]:
  """std::seed_seq{seed}.generate() of n 32-bit words (the C++ standard's algorithm)."""
  out = [0x8B8B8B8B] * n
  t = 11 if n >= 623 else 7 if n >= 68 else 5 if n >= 39 else 3 if n >= 7 else (n - 1) // 2
  p, q, s = (n - t) // 2, (n - t) // 2 + t, 1
  m = max(s + 1, n)
  mix = lambda x: x ^ (x >> 27)
  for k in range(m):
    r1 = 1664525 * mix(out[k % n] ^ out[(k + p) % n] ^ out[(k - 1) % n]) & _MASK32
    r2 = (r1 + (s if k == 0 else (k % n + seed if k <= s else k % n))) & _MASK32
    out[(k + p) % n] = (out[(k + p) % n] + r1) & _MASK32
    out[(k + q) % n] = (out[(k + q) % n] + r2) & _MASK32
    out[k % n] = r2
  for k in range(m, m + n):
    r3 = 1566083941 * mix((out[k % n] + out[(k + p) % n] + out[(k - 1) % n]) & _MASK32) & _MASK32
    r4 = (r3 - k % n) & _MASK32
    out[(k + p) % n] ^= r3
    out[(k + q) % n] ^= r4
    out[k % n] = r4
  return out


def _encrypt_all(seed: int, rounds: int) -> np.ndarray:
  """The cipher applied to every 16-bit value (two 8-bit words, grain's round function)."""
  w = _BITS // 2
  word = (1 << w) - 1
  rotl = lambda x, r: ((x << r) | (x >> (w - r))) & word
  f = lambda x: (rotl(x, 1) & x) ^ rotl(x, 2)  # rotating an 8-bit word by 8 is the word
  values = np.arange(1 << _BITS, dtype=np.uint32)
  left, right = values >> w, values & word
  keys = _seed_seq(seed, rounds)
  for i in range(0, rounds, 2):
    left = left ^ f(right) ^ (keys[i] & word)
    right = right ^ f(left) ^ (keys[i + 1] & word)
  return (left << w) | right


@functools.lru_cache(maxsize=8)
def permutation(n: int, seed: int, rounds: int = 4) -> np.ndarray:
  """[index_shuffle(i, max_index=n - 1, seed=seed, rounds=rounds) for i in range(n)]."""
  if not 1 <= n <= FAST_MAX:  # larger ranges use a larger block, ~1 step a call in grain
    raise ValueError(f'permutation of {n} positions: supported up to {FAST_MAX}')
  if n == 1:
    return np.zeros(1, np.int64)
  step = _encrypt_all(seed, rounds)
  # land[x]: the first value <= n - 1 on x's cycle, starting at x itself; doubling the jump
  # reaches it from anywhere within 2**16 steps.
  values = np.arange(1 << _BITS, dtype=np.uint32)
  land = np.where(values < n, values, step)
  for _ in range(_BITS):
    land = land[land]
  return land[step[:n]].astype(np.int64)


class ShuffledEpochs:
  """Index i -> example of the source, reshuffled every epoch; infinite."""

  def __init__(self, source, seed: int, shard_index: int = 0, shard_count: int = 1):
    self.source, self.seed = source, seed
    # Each process reads its own strided shard of the source.
    self.shard = range(shard_index, len(source), shard_count)
    if not self.shard:
      raise ValueError(
        f'source {getattr(source, "name", "")!r} has fewer examples '
        f'({len(source)}) than processes ({shard_count})'
      )

  def __len__(self):
    return 2**62  # effectively infinite; grain only asks for what it reads

  def epoch_and_example(self, i: int) -> tuple[int, int]:
    epoch, j = divmod(int(i), len(self.shard))
    seed = (self.seed + 7919 * epoch) % 2**32
    if len(self.shard) <= FAST_MAX:  # the epoch's whole order, computed once
      k = int(permutation(len(self.shard), seed)[j])
    else:
      k = grain.experimental.index_shuffle(j, max_index=len(self.shard) - 1, seed=seed, rounds=4)
    return epoch, self.shard[k]

  def __getitem__(self, i):
    return self.source[self.epoch_and_example(i)[1]]

  def get_many(self, indices) -> list:
    where = [self.epoch_and_example(i)[1] for i in indices]
    if hasattr(self.source, 'get_many'):
      return self.source.get_many(where)
    return [self.source[k] for k in where]
