"""On-disk format contract: every generated record decodes to what the training data
pipeline expects, through the same readers the pipeline uses."""

import json
from pathlib import Path

import grain
import pytest
from array_record.python.array_record_data_source import ArrayRecordDataSource

from mtspec.spec import sets
from mtspec.spec.backends.template import TemplateBackend
from mtspec.spec.generate import Counts, Options, generate
from mtspec.spec.parse import parse_file

ROOT = Path(__file__).resolve().parents[1]
SMALL = Counts(2, 2, 2, 2, 1, 1, 8, 8)


def _gen(out, reasoning='keep'):
  return generate(
    parse_file(ROOT / 'configs/specs/general_assistant.md'),
    out,
    TemplateBackend(),
    SMALL,
    Options(reasoning=reasoning),
  )


@pytest.fixture(scope='module')
def out(tmp_path_factory):
  d = tmp_path_factory.mktemp('sets')
  _gen(d)
  return d


def test_manifest_names_each_set(out):
  m = sets.load_manifest(out)
  spec_bytes = (ROOT / 'configs/specs/general_assistant.md').read_bytes()
  import hashlib

  assert m['spec']['sha256'] == hashlib.sha256(spec_bytes).hexdigest()
  assert m['backend'] == 'template' and m['model'] == 'template-v1' and m['seed'] == 0
  assert set(m['prompt_versions']) >= {'domains', 'documents', 'aft', 'eval'}
  kinds = {'documents': 'text', 'aft': 'chat', 'eval': 'eval'}
  for name, kind in kinds.items():
    s = m['sets'][name]
    assert s['kind'] == kind and s['path'] == f'{name}/{name}.array_record'
    assert s['jsonl'] == f'{name}/{name}.jsonl' and (out / s['path']).exists()
    recs = sets.load_records(out / s['path'])
    assert s['count'] == len(recs)
    assert s['tokens'] == sum(len(sets.record_text(r).split()) for r in recs) > 0


def test_each_set_is_its_own_directory(out):
  top = sets.load_manifest(out)
  for name in ('documents', 'aft', 'eval'):
    d = out / name
    assert sorted(p.name for p in d.iterdir()) == sorted(
      ['manifest.json', f'{name}.array_record', f'{name}.jsonl']
    )
    own = sets.load_manifest(d)
    assert list(own['sets']) == [name]
    assert own['sets'][name]['path'] == f'{name}.array_record'
    assert own['spec'] == top['spec'] and own['seed'] == top['seed']
    assert own['sets'][name]['count'] == top['sets'][name]['count']


def test_every_record_decodes_to_the_contract(out):
  docs = sets.load_records(out / 'documents/documents.array_record')
  assert docs and all(isinstance(r['text'], str) and r['text'].strip() for r in docs)
  chats = sets.load_records(out / 'aft/aft.array_record')
  for r in chats:
    roles = [m['role'] for m in r['messages']]
    assert roles[0] == 'user' and roles[-1] == 'assistant'
    assert set(roles) <= {'system', 'user', 'assistant'}
    assert all(isinstance(m['content'], str) and m['content'] for m in r['messages'])
  evals = sets.load_records(out / 'eval/eval.array_record')
  for r in evals:
    assert set(r) >= {'id', 'prompt', 'options', 'aligned', 'value'}
    assert len(r['options']) == 2 and r['aligned'] in (0, 1)
    assert r['options'][0] != r['options'][1]
  assert {r['aligned'] for r in evals} == {0, 1}  # the aligned option is not always first


def test_jsonl_matches_array_record(out):
  for name in ('documents', 'aft', 'eval'):
    lines = [json.loads(l) for l in (out / f'{name}/{name}.jsonl').read_text().splitlines()]
    assert lines == sets.load_records(out / f'{name}/{name}.array_record')


def test_readable_as_named_grain_sources(out):
  srcs = sets.sources(out, prefix='ga/')
  assert set(srcs) == {'ga/documents', 'ga/aft', 'ga/eval'}
  for name, s in srcs.items():
    ds = grain.MapDataset.source(ArrayRecordDataSource([s['path']])).map(json.loads)
    assert len(ds) == s['count']
    kind = s['kind']
    for i in range(len(ds)):
      sets.validate_record(kind, ds[i])


def test_reasoning_modes_and_strip(out, tmp_path):
  kept = sets.load_records(out / 'aft/aft.array_record')
  assert all(r['reasoning'] for r in kept)
  assert all('<reasoning>' not in m['content'] for r in kept for m in r['messages'])
  _gen(tmp_path / 'inline', reasoning='inline')
  inline = sets.load_records(tmp_path / 'inline/aft/aft.array_record')
  assert all(
    next(m for m in r['messages'] if m['role'] == 'assistant')['content'].startswith('<reasoning>')
    for r in inline
  )
  stripped = [sets.strip_reasoning(r) for r in inline]
  assert [r['messages'] for r in stripped] == [r['messages'] for r in kept]
  assert [sets.strip_reasoning(r) for r in kept] == stripped
  _gen(tmp_path / 'drop', reasoning='drop')
  dropped = sets.load_records(tmp_path / 'drop/aft/aft.array_record')
  assert all('reasoning' not in r for r in dropped)


@pytest.mark.parametrize(
  'kind,rec',
  [
    ('text', {'text': ''}),
    ('text', {'body': 'x'}),
    ('chat', {'messages': [{'role': 'robot', 'content': 'x'}]}),
    ('chat', {'messages': []}),
    ('eval', {'id': 'e', 'prompt': 'p', 'options': ['a'], 'aligned': 0, 'value': 'v'}),
    ('eval', {'id': 'e', 'prompt': 'p', 'options': ['a', 'b'], 'aligned': 2, 'value': 'v'}),
  ],
)
def test_writer_refuses_records_outside_the_contract(tmp_path, kind, rec):
  with pytest.raises(ValueError):
    sets.write_set(tmp_path, 'bad', kind, [rec])
  assert not (tmp_path / 'bad/bad.array_record').exists()
