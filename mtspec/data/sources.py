"""Named data sources on disk, each a random-access sequence of records of one kind.

A source config (`config.sources.<name>`) has `uri`, `kind` and `text_key`:
  uri   builtin[:<num_docs>]  the generated built-in corpus (a TFDS dataset built locally)
        tfds:<name>           any TFDS dataset prepared as ArrayRecord, via tfds.data_source
        jsonl:<path>          one JSON object per line
        arrayrecord:<path>    a set written by `python -m mtspec.spec generate` (JSON records);
                              <path> is the .array_record file or the set's directory
  kind  text  plain documents, loss on every token (field `text_key`)
        chat  conversations under `messages`, rendered with the chat template, loss on
              assistant tokens only
"""

import hashlib
import json

import tensorflow_datasets as tfds

from mtspec import paths
from mtspec.data import builtin

KINDS = ('text', 'chat')


class Source:
  """Random access to decoded records (dicts) of a named source."""

  def __init__(self, name: str, records, kind: str, text_key: str, manifest_files=()):
    self.name, self.records, self.kind, self.text_key = name, records, kind, text_key
    self.manifest_files = tuple(manifest_files)
    if len(records) == 0:
      raise ValueError(f'data source {name!r} is empty')

  def __len__(self):
    return len(self.records)

  def __getitem__(self, i) -> dict:
    return self._decode(self.records[i], i)

  def get_many(self, indices) -> list[dict]:
    """Records at indices, in one read where the store can (ArrayRecord: far cheaper a
    record than one read each)."""
    if hasattr(self.records, '__getitems__'):
      return [self._decode(r, i) for r, i in zip(self.records.__getitems__(indices), indices)]
    return [self[i] for i in indices]

  def _decode(self, record, i) -> dict:
    if isinstance(record, (bytes, str)):
      record = json.loads(record)
    field = 'messages' if self.kind == 'chat' else self.text_key
    if not isinstance(record, dict) or field not in record:
      raise KeyError(
        f'data source {self.name!r}: record {i} has no field {field!r}'
        + (' (set text_key)' if self.kind == 'text' else '')
      )
    if self.kind == 'text':
      return {'text': builtin.ensure_numpy_text(record[field])}
    return {'messages': record['messages']}

  def manifest_hash(self) -> str:
    """Hash of what identifies the data: manifest/dataset_info files, or the file itself."""
    h = hashlib.sha256(self.name.encode())
    for path in self.manifest_files:
      h.update(paths.read_bytes(path))
    return h.hexdigest()[:16]


class JsonlRecords:
  def __init__(self, path: str):
    if not paths.exists(path):
      raise FileNotFoundError(f'no JSONL file at {path}')
    self.rows = []
    with paths.open(path) as f:
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


def _array_record_files(path: str) -> tuple[list[str], list[str]]:
  if paths.isdir(path):
    files = paths.glob(path, '*.array_record')
    manifest = [paths.join(path, 'manifest.json')]
  else:
    files = [path] if paths.exists(path) else []
    manifest = [paths.join(paths.parent(path), 'manifest.json')]
  if not files:
    raise FileNotFoundError(f'no .array_record file at {path}')
  return files, [m for m in manifest if paths.exists(m)] or files


def open_source(name: str, src_cfg, data_dir: str, split: str = 'train') -> Source:
  uri, kind = src_cfg.uri, src_cfg.get('kind', 'text')
  text_key = src_cfg.get('text_key', 'text')
  where = f'config.sources.{name}'
  if kind not in KINDS:
    raise ValueError(f'{where}.kind={kind!r}: expected one of {KINDS}')
  scheme, _, rest = uri.partition(':')
  try:
    if scheme == 'builtin':
      builder = builtin.prepare(data_dir, int(rest or builtin.DEFAULT_DOCS))
      info = paths.join(builder.data_dir, 'dataset_info.json')
      return Source(name, builder.as_data_source(split), kind, 'text', [info])
    if scheme == 'tfds' and rest:
      records = tfds.data_source(rest, split=split, data_dir=data_dir or None)
      return Source(name, records, kind, text_key)
    if scheme == 'jsonl' and rest:
      return Source(name, JsonlRecords(rest), kind, text_key, [rest])
    if scheme == 'arrayrecord' and rest:
      import grain

      files, manifest = _array_record_files(rest)
      return Source(name, grain.sources.ArrayRecordDataSource(files), kind, text_key, manifest)
  except (FileNotFoundError, ValueError) as e:
    raise ValueError(f'{where}.uri={uri!r}: {e}') from None
  except Exception as e:  # tfds raises many types; name the source either way
    raise ValueError(f'{where}.uri={uri!r}: could not open split {split!r}: {e}') from e
  raise ValueError(
    f'{where}.uri={uri!r}: expected builtin, tfds:<name>, jsonl:<path> or arrayrecord:<path>'
  )
