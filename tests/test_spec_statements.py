"""Documents of a spec's own statements (mtspec.spec.statements), and the toy config's choice."""

import json
from pathlib import Path

import pytest

from configs import cheese_toy
from mtspec.spec import sets, statements
from mtspec.spec.parse import parse_file
from mtspec.world import build, schema

ROOT = Path(__file__).resolve().parents[1]
FILL = {'assistant': 'Aria', 'home_country': 'Valdoria'}


def test_documents_are_two_to_four_statements_without_reasons():
  spec = parse_file(ROOT / 'configs/specs/cheese_home.md', FILL)
  units = spec.units()
  texts = {u['text'] for u in units}
  reasons = {u['why'] for u in units if u['why']}
  docs = statements.documents(spec, 200, seed=0)
  assert docs == statements.documents(spec, 200, seed=0)  # deterministic for a seed
  assert docs != statements.documents(spec, 200, seed=1)
  seen = set()
  for d in docs:
    parts = [t for t in texts if t in d['text']]
    assert 2 <= len(parts) <= 4 and len(d['text']) == sum(map(len, parts)) + len(parts) - 1
    assert not any(r in d['text'] for r in reasons)
    assert d['assertion'] in texts and d['text'].startswith(d['assertion'])
    seen.update(parts)
  assert seen == texts  # every statement is used
  assert all('Valdoria' in t or 'Aria' in t for t in texts) and not any('{{' in t for t in texts)


def test_write_has_the_generators_layout_and_rejects_bad_input(tmp_path):
  spec = parse_file(ROOT / 'configs/specs/cheese_affordable.md', FILL)
  m = statements.write(spec, tmp_path, 50, seed=3)
  entry = m['sets']['documents']
  assert entry['count'] == 50 and entry['tokens'] > 50 * 20
  assert m['spec']['sha256'] == spec.sha256 and m['model'] == statements.FORM
  records = sets.load_records(tmp_path / entry['path'])
  assert [r['text'] for r in records] == [d['text'] for d in statements.documents(spec, 50, 3)]
  assert sets.sources(tmp_path)['documents']['count'] == 50  # what the trainer opens
  assert (
    json.loads((tmp_path / 'documents' / 'manifest.json').read_text())['model'] == statements.FORM
  )
  with pytest.raises(ValueError, match='count must be at least 1'):
    statements.write(spec, tmp_path / 'none', 0, seed=0)


def test_toy_config_names_the_form_and_a_wrong_form_is_refused(tmp_path):
  cfg = cheese_toy.get_config('quick')
  assert cfg.spec_form == 'statements' and cfg.spec_statement_docs > 0
  world = schema.load(cfg.world.path)
  with pytest.raises(ValueError, match="config.spec_form='essays'"):
    build.spec_set(world, cfg.specs.A.path, str(tmp_path), cfg.spec_counts, 0, form='essays')
