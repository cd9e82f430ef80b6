"""Text sources on disk, each opened as a random-access sequence of strings.

Spellings (config `data.source`):
  builtin            the generated built-in corpus (a TFDS dataset built locally)
  tfds:<name>        any TFDS dataset prepared as ArrayRecord, via tfds.data_source (e.g. c4/en)
  jsonl:<path>       one JSON object per line, text under `data.text_key`
"""
import json
import os

import tensorflow_datasets as tfds

from mtspec.data import builtin


class TextSource:
  """Random access to the text field of any record source."""

  def __init__(self, records, text_key: str, name: str):
    self.records, self.text_key, self.name = records, text_key, name
    if len(records) == 0:
      raise ValueError(f'data source {name!r} is empty')

  def __len__(self):
    return len(self.records)

  def __getitem__(self, i) -> str:
    record = self.records[i]
    try:
      return builtin.ensure_numpy_text(record[self.text_key])
    except (KeyError, TypeError):
      raise KeyError(f'data source {self.name!r}: record {i} has no field {self.text_key!r} '
                     f'(set data.text_key)') from None


class JsonlRecords:

  def __init__(self, path: str):
    if not os.path.exists(path):
      raise FileNotFoundError(f'data.source: no JSONL file at {path}')
    self.rows = []
    with open(path) as f:
      for line_no, line in enumerate(f, 1):
        if line.strip():
          try:
            self.rows.append(json.loads(line))
          except json.JSONDecodeError as e:
            raise ValueError(f'{path}:{line_no}: not valid JSON ({e.msg})') from None

  def __len__(self):
    return len(self.rows)

  def __getitem__(self, i):
    return self.rows[i]


def open_text_source(data_cfg, data_dir: str, split: str | None = None) -> TextSource:
  spelling, split = data_cfg.source, split or data_cfg.split
  if spelling == 'builtin':
    builder = builtin.prepare(data_dir, data_cfg.builtin_docs)
    return TextSource(builder.as_data_source(split), 'text', f'builtin/{split}')
  kind, _, rest = spelling.partition(':')
  if kind == 'tfds' and rest:
    try:
      records = tfds.data_source(rest, split=split, data_dir=data_dir or None)
    except Exception as e:  # tfds raises many types; name the source either way
      raise ValueError(f'data.source={spelling!r}: could not open split {split!r} under '
                       f'{data_dir or "the default TFDS dir"}: {e}') from e
    return TextSource(records, data_cfg.text_key, spelling)
  if kind == 'jsonl' and rest:
    return TextSource(JsonlRecords(rest), data_cfg.text_key, spelling)
  raise ValueError(f'data.source={spelling!r}: expected builtin, tfds:<name> or jsonl:<path>')
