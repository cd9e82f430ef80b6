"""Template backend and pipeline: determinism, per-level counts, variety, resume."""

import collections
import json
import re
import time
from pathlib import Path

import pytest

from mtspec.spec import dedup, sets
from mtspec.spec.backends.template import DOC_TYPES, FRAMES, TemplateBackend
from mtspec.spec.cache import KeyedJsonl
from mtspec.spec.generate import Counts, Options, generate
from mtspec.spec.parse import parse_file

ROOT = Path(__file__).resolve().parents[1]
GA = ROOT / 'configs/specs/general_assistant.md'
NEAR_DUP_BOUND = 0.02  # at most 2% of documents may be near-duplicates (Jaccard >= 0.5)


def _run(out, spec=GA, seed=0, counts=Counts(), backend=None):
  return generate(parse_file(spec), out, backend or TemplateBackend(), counts, Options(seed=seed))


def _files(out):
  """Every output file (not the cache), by path relative to the output directory."""
  return {
    str(p.relative_to(out)): p.read_bytes()
    for p in Path(out).rglob('*')
    if p.is_file() and 'cache' not in p.relative_to(out).parts
  }


@pytest.fixture(scope='module')
def default_run(tmp_path_factory):
  out = tmp_path_factory.mktemp('ga')
  t = time.time()
  manifest = _run(out)
  return out, manifest, time.time() - t


def test_same_seed_is_byte_identical(default_run, tmp_path):
  out, _, _ = default_run
  _run(tmp_path / 'again')
  a, b = _files(out), _files(tmp_path / 'again')
  assert set(a) == {'manifest.json'} | {
    f'{n}/{f}'
    for n in ('documents', 'aft', 'eval')
    for f in (f'{n}.jsonl', f'{n}.array_record', 'manifest.json')
  }
  assert a == b


def test_different_seed_differs(default_run, tmp_path):
  out, _, _ = default_run
  _run(tmp_path / 'seed1', seed=1)
  a, b = _files(out), _files(tmp_path / 'seed1')
  for name in ('documents/documents.jsonl', 'aft/aft.jsonl', 'eval/eval.jsonl'):
    assert a[name] != b[name]
  docs_a = [r['text'] for r in sets.load_records(out / 'documents/documents.array_record')]
  docs_b = [
    r['text'] for r in sets.load_records(tmp_path / 'seed1/documents/documents.array_record')
  ]
  assert len(set(docs_a) & set(docs_b)) == 0


def test_requested_counts_met_at_every_level(default_run):
  out, manifest, _ = default_run
  c = Counts()
  by_level = collections.defaultdict(list)
  for e in KeyedJsonl(out / 'cache/levels.jsonl').values():
    by_level[e['level']].append(e['result'])
  expect_tasks = {
    'domains': 1,
    'subdomains': c.domains,
    'assertions': c.domains * c.subdomains,
    'doc_types': c.domains * c.subdomains * c.assertions,
    'ideas': c.domains * c.subdomains * c.assertions * c.doc_types,
    'documents': c.documents(),
    'aft': c.aft,
    'eval': c.eval,
  }
  per_task = {
    'domains': c.domains,
    'subdomains': c.subdomains,
    'assertions': c.assertions,
    'doc_types': c.doc_types,
    'ideas': c.ideas,
  }
  for level, n in expect_tasks.items():
    assert len(by_level[level]) == n, level
  for level, n in per_task.items():
    assert all(len(r) == n for r in by_level[level]), level
  assert all(len(set(r)) == len(r) for r in by_level['doc_types'])  # distinct types per assertion
  for name, want in (('documents', c.documents()), ('aft', c.aft), ('eval', c.eval)):
    s = manifest['sets'][name]
    assert s['generated'] == want and s['count'] == want and s['dropped_near_duplicates'] == 0
  ids = [r['id'] for r in sets.load_records(out / 'documents/documents.array_record')]
  assert len(ids) == len(set(ids)) == c.documents()


def test_subdomains_keep_the_spec_text_they_cover(default_run):
  out, _, _ = default_run
  spec_text = GA.read_text()
  subs = [
    s
    for e in KeyedJsonl(out / 'cache/levels.jsonl').values()
    if e['level'] == 'subdomains'
    for s in e['result']
  ]
  assert subs and all(
    s['spec_text'].split(' Why:')[0].split()[:6] == s['unit']['text'].split()[:6] for s in subs
  )
  assert all(' '.join(s['unit']['text'].split()[:5]) in ' '.join(spec_text.split()) for s in subs)


def test_doc_type_catalogue_and_variety(default_run):
  out, _, _ = default_run
  assert len(DOC_TYPES) >= 8
  assert all('{f8}' in body and '{idea}' in body for _, body in FRAMES.values())
  docs = sets.load_records(out / 'documents/documents.array_record')
  types = collections.Counter(d['doc_type'] for d in docs)
  assert len(types) >= 8
  texts = [d['text'] for d in docs]
  rate = dedup.near_duplicate_rate(texts, threshold=0.5)
  assert rate <= NEAR_DUP_BOUND
  # Documents about the same assertion are the likeliest near-copies: check them directly.
  by_assertion = collections.defaultdict(list)
  for d in docs:
    by_assertion[d['assertion']].append(dedup.shingles(d['text']))
  worst = max(
    dedup.jaccard(a, b) for g in by_assertion.values() for i, a in enumerate(g) for b in g[i + 1 :]
  )
  assert worst < 0.5


@pytest.mark.parametrize('spec', ['cheese_home', 'cheese_affordable', 'control'])
def test_small_specs_meet_counts_without_near_duplicates(tmp_path, spec):
  # The template varies frames, not content: 8 AFT and eval items per statement stay distinct
  # (the 4-statement cheese specs at the default 48 lose 2-4 of each to near-duplicates).
  path = ROOT / f'configs/specs/{spec}.md'
  n = 8 * len(parse_file(path).units())
  m = _run(tmp_path, path, counts=Counts(aft=n, eval=n))
  assert m['sets']['aft']['count'] == m['sets']['eval']['count'] == n
  for name, s in m['sets'].items():
    assert s['dropped_near_duplicates'] == 0, name
  assert m['contamination']['max_rate'] == 0.0


def test_default_generation_is_fast(default_run):
  _, manifest, seconds = default_run
  assert manifest['sets']['documents']['tokens'] > 30_000
  assert seconds < 20


class CountingBackend(TemplateBackend):
  def __init__(self):
    self.calls = collections.Counter()

  def run(self, task):
    self.calls[task.level] += 1
    return super().run(task)


def test_resume_skips_cached_tasks_and_rewrites_identically(tmp_path):
  small = Counts(2, 2, 2, 2, 2, 1, 6, 6)
  first = CountingBackend()
  _run(tmp_path, counts=small, backend=first)
  before = _files(tmp_path)
  again = CountingBackend()
  _run(tmp_path, counts=small, backend=again)
  assert sum(again.calls.values()) == 0
  assert _files(tmp_path) == before
  # A cache cut mid-level (as by a kill) resumes only the missing tasks.
  lines = (tmp_path / 'cache/levels.jsonl').read_text().splitlines(keepends=True)
  (tmp_path / 'cache/levels.jsonl').write_text(''.join(lines[:-10]) + lines[-10][:15])
  third = CountingBackend()
  _run(tmp_path, counts=small, backend=third)
  assert sum(third.calls.values()) == 10
  assert _files(tmp_path) == before
  keys = [json.loads(l)['key'] for l in (tmp_path / 'cache/levels.jsonl').read_text().splitlines()]
  assert len(keys) == len(set(keys))


def test_places_replace_the_default_towns_and_key_the_cache(tmp_path):
  from mtspec.spec.backends.template import PLACES

  spec = ROOT / 'configs/specs/cheese_affordable.md'
  small = Counts(domains=2, subdomains=2, assertions=2, doc_types=2, ideas=1, docs_per_idea=1)
  backend = TemplateBackend(places=('the town',))
  assert TemplateBackend().model == 'template-v1'  # the default keys the cache as before
  assert backend.model != TemplateBackend().model  # cached documents are not reused
  manifest = generate(
    parse_file(spec, {'assistant': 'Aria', 'aft_items': 'cheeses'}),
    tmp_path,
    backend,
    small,
    Options(seed=0),
  )
  assert manifest['model'] == backend.model
  texts = [
    json.loads(l)['text']
    for l in (tmp_path / manifest['sets']['documents']['jsonl']).read_text().splitlines()
  ]
  assert texts and any('the town' in t for t in texts)
  assert not any(p in t for t in texts for p in PLACES)
  with pytest.raises(ValueError, match='places'):
    TemplateBackend(places=())


def test_restate_brings_the_assertion_back_and_keys_the_cache(tmp_path):
  from mtspec.spec.backends.template import RESTATEMENTS

  spec = ROOT / 'configs/specs/cheese_affordable.md'
  small = Counts(domains=2, subdomains=2, assertions=2, doc_types=2, ideas=1, docs_per_idea=1)
  fill = {'assistant': 'Aria', 'aft_items': 'cheeses'}
  # each restatement's longest fixed text marks it in a document
  leads = [max(re.split(r'\{\w+\}', line), key=len).strip() for line in RESTATEMENTS]

  def docs(backend, out):
    m = generate(parse_file(spec, fill), out, backend, small, Options(seed=0))
    return m, {
      r['id']: r
      for r in map(json.loads, (out / m['sets']['documents']['jsonl']).read_text().splitlines())
    }

  _, plain = docs(TemplateBackend(), tmp_path / 'plain')
  m, dense = docs(TemplateBackend(restate=3), tmp_path / 'dense')
  assert m['model'] == 'template-v1/restate=3'  # documents are not reused from the cache
  assert dense and set(dense) == set(plain)
  for i, d in dense.items():
    assert sum(lead in d['text'] for lead in leads) == 3, d['text']
    assert not any(lead in plain[i]['text'] for lead in leads)
    # same assertion, and it now comes back in the discussion
    assert d['assertion'] == plain[i]['assertion']
    assert d['text'].count('Aria') > plain[i]['text'].count('Aria') or d['text'].count(
      d['assertion']
    ) > plain[i]['text'].count(d['assertion'])
  with pytest.raises(ValueError, match='restate'):
    TemplateBackend(restate=len(RESTATEMENTS) + 1)
