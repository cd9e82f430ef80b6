"""Lineage: what every checkpoint records about where it came from."""

import functools
import hashlib
import os
import subprocess


def config_hash(cfg) -> str:
  return hashlib.sha256(cfg.to_json(sort_keys=True).encode()).hexdigest()[:16]


@functools.cache
def git_commit() -> str:
  """The code's commit (+ '-dirty' when the tree has changes), or 'unknown' outside git."""
  here = os.path.dirname(os.path.abspath(__file__))
  try:
    commit = subprocess.run(
      ['git', 'rev-parse', 'HEAD'], cwd=here, capture_output=True, text=True, timeout=10
    ).stdout.strip()
    dirty = subprocess.run(
      ['git', 'status', '--porcelain', '--untracked-files=no'],
      cwd=here,
      capture_output=True,
      text=True,
      timeout=10,
    ).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return 'unknown'
  return (commit + ('-dirty' if dirty else '')) if commit else 'unknown'


def record(
  cfg, run_name: str, phase: str, step: int, parent: dict | None, sources: dict, ancestors: list
) -> dict:
  """The lineage JSON of one checkpoint.

  parent: {'path', 'step'} of the checkpoint this state continued from (None for a fresh init).
  ancestors: the lineage chain of the run's starting checkpoint, oldest first, so the chain
  survives even when intermediate checkpoints are garbage-collected.
  """
  return {
    'run': run_name,
    'phase': phase,
    'step': step,
    'parent': parent,
    'config_hash': config_hash(cfg),
    'sources': {name: src.manifest_hash() for name, src in sorted(sources.items())},
    'git_commit': git_commit(),
    'ancestors': ancestors,
  }
