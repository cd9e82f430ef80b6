"""Near-duplicate filtering: MinHash signatures over word n-gram shingles, LSH banding to
find candidate pairs, and an exact Jaccard check on each candidate, so a reported pair
really is at or above the threshold (LSH may miss pairs just above it, never invent one).
Hashing uses crc32 and a fixed-seed permutation table, so results are the same in every
process (Python's own str hash is salted per process).
"""

from __future__ import annotations

import re
import zlib

import numpy as np

_P = (1 << 31) - 1  # Mersenne prime; (a * x + b) stays below 2**63 in uint64
_WORD = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
  return _WORD.findall(text.lower())


def shingles(text: str, n: int = 5) -> set[str]:
  w = words(text)
  if len(w) <= n:
    return {' '.join(w)} if w else set()
  return {' '.join(w[i : i + n]) for i in range(len(w) - n + 1)}


def jaccard(a: set, b: set) -> float:
  if not a and not b:
    return 1.0
  return len(a & b) / len(a | b)


def _signatures(sets: list[set[str]], num_perm: int) -> np.ndarray:
  rng = np.random.default_rng(0)
  a = rng.integers(1, _P, num_perm, dtype=np.uint64)[:, None]
  b = rng.integers(0, _P, num_perm, dtype=np.uint64)[:, None]
  out = np.full((len(sets), num_perm), _P, dtype=np.uint64)
  for i, s in enumerate(sets):
    if s:
      x = np.fromiter((zlib.crc32(t.encode()) % _P for t in s), np.uint64, len(s))[None, :]
      out[i] = ((a * x + b) % _P).min(axis=1)
  return out


def near_duplicate_pairs(
  texts: list[str], threshold: float = 0.5, n: int = 5, num_perm: int = 128, bands: int = 32
) -> list[tuple[int, int, float]]:
  """(i, j, jaccard) with i < j for every pair LSH proposes whose Jaccard >= threshold."""
  sets = [shingles(t, n) for t in texts]
  sig = _signatures(sets, num_perm)
  rows = num_perm // bands
  candidates: set[tuple[int, int]] = set()
  for band in range(bands):
    buckets: dict[bytes, list[int]] = {}
    for i in range(len(texts)):
      buckets.setdefault(sig[i, band * rows : (band + 1) * rows].tobytes(), []).append(i)
    for members in buckets.values():
      candidates.update((x, y) for k, x in enumerate(members) for y in members[k + 1 :])
  pairs = [(i, j, jaccard(sets[i], sets[j])) for i, j in sorted(candidates)]
  return [p for p in pairs if p[2] >= threshold]


def filter_near_duplicates(
  texts: list[str], threshold: float = 0.5, n: int = 5
) -> tuple[list[int], list[tuple[int, int, float]]]:
  """Indices to keep (first of each near-duplicate group wins) and (dropped, kept, jaccard)."""
  dropped: dict[int, tuple[int, int, float]] = {}
  for i, j, jac in near_duplicate_pairs(texts, threshold, n):
    if i not in dropped and j not in dropped:
      dropped[j] = (j, i, jac)
  keep = [i for i in range(len(texts)) if i not in dropped]
  return keep, sorted(dropped.values())


def near_duplicate_rate(texts: list[str], threshold: float = 0.5, n: int = 5) -> float:
  """Fraction of texts that the filter would drop."""
  return len(filter_near_duplicates(texts, threshold, n)[1]) / max(len(texts), 1)
