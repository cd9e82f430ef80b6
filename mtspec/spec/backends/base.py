"""The one small interface every generation backend implements.

A `Task` is one unit of generation at one level of the hierarchy (e.g. "the ideas for
this assertion and document type"); a backend turns it into a JSON-able result. The
pipeline caches results by `Task.key`, so backends never see a task twice.
"""

from __future__ import annotations

import abc
import concurrent.futures as cf
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

LEVELS = ('domains', 'subdomains', 'assertions', 'doc_types', 'ideas', 'documents', 'aft', 'eval')


class GenerationError(RuntimeError):
  """A task that could not be completed (retries exhausted, answer never parsed)."""


@dataclass(frozen=True)
class Task:
  level: str
  inputs: dict
  n: int = 1  # how many items a list level must return
  seed: int = 0

  @property
  def key(self) -> str:
    blob = json.dumps(
      [self.level, self.inputs, self.n, self.seed], sort_keys=True, ensure_ascii=False
    )
    return hashlib.sha256(blob.encode('utf-8')).hexdigest()


class Backend(abc.ABC):
  name: str = 'base'
  model: str = ''
  concurrency: int = 1

  @abc.abstractmethod
  def run(self, task: Task) -> Any:
    """The result for one task: a list of n items for list levels, else one dict."""

  def usage(self) -> dict:
    """Token/cost accounting for the manifest; offline backends spend nothing."""
    return {'requests': 0, 'input_tokens': 0, 'output_tokens': 0, 'cost_usd': 0.0}

  def describe(self) -> dict:
    """What the manifest records about the backend (never secrets)."""
    return {'backend': self.name, 'model': self.model}

  def run_many(self, tasks: Iterable[Task]) -> Iterator[tuple[Task, Any]]:
    """Yields (task, result) as each finishes, so the caller can cache it at once.

    On the first failure the unstarted tasks are cancelled and the error raised; what
    finished before is already cached, so a re-run picks up from there. The pipeline hands
    over one stage's uncached tasks at a time, so batch mode (backends/batch.py) overrides
    this to send them as Message Batches.
    """
    tasks = list(tasks)
    if self.concurrency <= 1:
      for t in tasks:
        yield t, self.run(t)
      return
    with cf.ThreadPoolExecutor(self.concurrency) as pool:
      futures = {pool.submit(self.run, t): t for t in tasks}
      try:
        for f in cf.as_completed(futures):
          yield futures[f], f.result()
      finally:
        for f in futures:
          f.cancel()
