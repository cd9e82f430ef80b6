"""The on-disk format of generated sets, which the training data pipeline reads directly.

An output directory holds a `manifest.json` naming every set, and one directory per set,
`<set>/`, holding that set's own `manifest.json`, `<set>.array_record` (one record per
example, `group_size:1` for random access) and `<set>.jsonl` (the same records, for people).
So `arrayrecord:<out>/documents` names exactly one set. Each record is the UTF-8 JSON of:

  kind "text": {"text": str, ...}
  kind "chat": {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...], ...}
  kind "eval": {"id": str, "prompt": str, "options": [str, str], "aligned": 0|1, "value": ...}

Extra keys (id, doc_type, reasoning, ...) are allowed and ignored by the trainer.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from array_record.python import array_record_module

from mtspec import paths

MANIFEST = 'manifest.json'
ROLES = ('system', 'user', 'assistant')
_REASONING = re.compile(r'<reasoning>.*?</reasoning>\s*', re.S)


def validate_record(kind: str, rec: dict) -> None:
  """Raise ValueError unless `rec` has the shape the contract promises for `kind`."""

  def need(ok, what):
    if not ok:
      raise ValueError(f'{kind} record {str(rec)[:120]!r}: {what}')

  need(isinstance(rec, dict), 'not an object')
  if kind == 'text':
    need(isinstance(rec.get('text'), str) and rec['text'], "needs a non-empty 'text' string")
  elif kind == 'chat':
    msgs = rec.get('messages')
    need(isinstance(msgs, list) and msgs, "needs a non-empty 'messages' list")
    for m in msgs:
      need(
        isinstance(m, dict) and m.get('role') in ROLES and isinstance(m.get('content'), str),
        f'message {m!r} needs role in {ROLES} and string content',
      )
  elif kind == 'eval':
    opts = rec.get('options')
    need(isinstance(rec.get('id'), str) and isinstance(rec.get('prompt'), str), 'needs id, prompt')
    need(
      isinstance(opts, list) and len(opts) == 2 and all(isinstance(o, str) for o in opts),
      "needs 'options' as two strings",
    )
    need(rec.get('aligned') in (0, 1) and 'value' in rec, "needs 'aligned' 0|1 and 'value'")
  else:
    raise ValueError(f'unknown set kind {kind!r}')


def record_text(rec: dict) -> str:
  """All the words of a record of any kind (for tokens and overlap checks)."""
  if 'text' in rec:
    return rec['text']
  if 'messages' in rec:
    return '\n'.join(m['content'] for m in rec['messages'])
  return '\n'.join([rec['prompt'], *rec['options']])


def strip_reasoning(rec: dict) -> dict:
  """A chat record without its reasoning, whether kept as a key or inline in a turn."""
  out = {k: v for k, v in rec.items() if k != 'reasoning'}
  if 'messages' in out:
    out['messages'] = [dict(m, content=_REASONING.sub('', m['content'])) for m in out['messages']]
  return out


def write_set(out_dir: str | Path, name: str, kind: str, records: list[dict]) -> dict:
  """Write one set to `<out_dir>/<name>/` (each file written whole, then moved into place, so
  a kill never leaves half a set) and return its manifest entry, paths relative to `out_dir`."""
  blobs = []
  for rec in records:
    validate_record(kind, rec)
    blobs.append(json.dumps(rec, ensure_ascii=False, sort_keys=True))
  d = paths.join(out_dir, name)
  ar, jl = f'{name}.array_record', f'{name}.jsonl'
  with paths.local_file(paths.join(d, ar)) as tmp:  # ArrayRecord writes local files only
    writer = array_record_module.ArrayRecordWriter(tmp, 'group_size:1')
    for b in blobs:
      writer.write(b.encode('utf-8'))
    writer.close()
  paths.write_text(paths.join(d, jl), ''.join(b + '\n' for b in blobs))
  return {
    'kind': kind,
    'count': len(records),
    'path': f'{name}/{ar}',
    'jsonl': f'{name}/{jl}',
    'tokens': sum(len(record_text(r).split()) for r in records),
  }


def load_records(path: str | Path) -> list[dict]:
  """Every record of an .array_record file, decoded from JSON. A gs:// file is downloaded
  first, in one request: array_record's own GCS reader asks for one record at a time."""
  with paths.fetched(path) as local:
    reader = array_record_module.ArrayRecordReader(local)
    try:
      return [json.loads(b.decode('utf-8')) for b in reader.read_all()]
    finally:
      reader.close()


def _write_json(path: str, data: dict) -> None:
  paths.write_text(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + '\n')


def write_manifest(out_dir: str | Path, manifest: dict) -> None:
  """The top manifest names every set; each set's directory gets the same provenance with
  only its own entry, paths relative to that directory. Set manifests first, top last, so
  the top manifest's presence means the whole output is complete."""
  for name, entry in manifest['sets'].items():
    own = {k: Path(v).name if k in ('path', 'jsonl') else v for k, v in entry.items()}
    _write_json(paths.join(out_dir, name, MANIFEST), dict(manifest, sets={name: own}))
  _write_json(paths.join(out_dir, MANIFEST), manifest)


def load_manifest(out_dir: str | Path) -> dict:
  return paths.read_json(paths.join(out_dir, MANIFEST))


def sources(out_dir: str | Path, prefix: str = '') -> dict[str, dict]:
  """Named sources for the training pipeline: {prefix + set: {"path", "kind", "count"}}."""
  out = paths.absolute(out_dir)
  return {
    prefix + name: {'path': paths.join(out, s['path']), 'kind': s['kind'], 'count': s['count']}
    for name, s in load_manifest(out)['sets'].items()
  }
