"""Contamination check: word n-gram overlap between held-out eval items and training sets.

An eval item is flagged for a training set when any of its word n-grams (default n=8,
lowercased, punctuation dropped) occurs anywhere in that set. A set's rate is the
fraction of eval items it flags. `assert_clean` raises when any rate passes `max_rate`;
experiments call it before reporting results.
"""

from __future__ import annotations

from pathlib import Path

from mtspec.spec.dedup import words
from mtspec.spec.sets import load_records, record_text


class ContaminationError(RuntimeError):
  """Eval items overlap training data beyond the allowed rate; results must not be reported."""


def ngrams(text: str, n: int) -> set[str]:
  w = words(text)
  return {' '.join(w[i : i + n]) for i in range(len(w) - n + 1)}


def overlap_report(
  eval_items: list[dict], train_sets: dict[str, list[dict]], n: int = 8, examples: int = 5
) -> dict:
  """{"n", "items", "max_rate", "sets": {name: {"flagged", "rate", "ids", "examples"}}}."""
  item_grams = [
    (it.get('id', str(k)), ngrams(record_text(it), n)) for k, it in enumerate(eval_items)
  ]
  sets = {}
  for name, records in train_sets.items():
    train: set[str] = set()
    for r in records:
      train |= ngrams(record_text(r), n)
    hits = [(i, sorted(g & train)[0]) for i, g in item_grams if g & train]
    sets[name] = {
      'flagged': len(hits),
      'rate': len(hits) / max(len(eval_items), 1),
      'ids': [i for i, _ in hits],
      'examples': [{'id': i, 'ngram': g} for i, g in hits[:examples]],
    }
  return {
    'n': n,
    'items': len(eval_items),
    'sets': sets,
    'max_rate': max((s['rate'] for s in sets.values()), default=0.0),
  }


def check(report: dict, max_rate: float = 0.0) -> None:
  """Raise ContaminationError naming each training set whose rate exceeds max_rate."""
  bad = {k: s for k, s in report['sets'].items() if s['rate'] > max_rate}
  if bad:
    detail = '; '.join(
      f'{k}: {s["flagged"]}/{report["items"]} items share a {report["n"]}-gram'
      f' (e.g. {s["examples"][0]["id"]}: {s["examples"][0]["ngram"]!r})'
      for k, s in bad.items()
    )
    raise ContaminationError(f'eval contamination above max_rate={max_rate}: {detail}')


def assert_clean(
  eval_path: str | Path,
  train_paths: dict[str, str | Path] | list,
  max_rate: float = 0.0,
  n: int = 8,
) -> dict:
  """Check .array_record files; returns the report, or raises ContaminationError."""
  if not isinstance(train_paths, dict):
    train_paths = {str(p): p for p in train_paths}
  report = overlap_report(
    load_records(eval_path), {k: load_records(p) for k, p in train_paths.items()}, n
  )
  check(report, max_rate)
  return report
