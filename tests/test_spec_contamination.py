"""Contamination check and near-duplicate filter: each flags what is planted and passes
what is clean."""

import subprocess
import sys
from pathlib import Path

import pytest

from mtspec.spec import contamination, dedup, sets
from mtspec.spec.backends.template import TemplateBackend
from mtspec.spec.generate import Counts, generate
from mtspec.spec.parse import parse_file

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def out(tmp_path_factory):
  d = tmp_path_factory.mktemp('cont')
  generate(
    parse_file(ROOT / 'configs/specs/cheese_home.md'),
    d,
    TemplateBackend(),
    Counts(2, 2, 2, 2, 2, 1, 12, 12),
  )
  return d


def test_clean_generated_sets_pass(out):
  report = contamination.assert_clean(
    out / 'eval/eval.array_record',
    {'documents': out / 'documents/documents.array_record', 'aft': out / 'aft/aft.array_record'},
  )
  assert report['max_rate'] == 0.0 and report['items'] == 12
  assert sets.load_manifest(out)['contamination']['max_rate'] == 0.0


def test_planted_overlap_is_flagged(out, tmp_path):
  evals = sets.load_records(out / 'eval/eval.array_record')
  docs = sets.load_records(out / 'documents/documents.array_record')
  planted = dict(docs[0], text=docs[0]['text'] + '\n\nAs an aside: ' + evals[3]['prompt'])
  sets.write_set(tmp_path, 'leaky', 'text', docs[1:] + [planted])
  with pytest.raises(contamination.ContaminationError) as e:
    contamination.assert_clean(
      out / 'eval/eval.array_record', {'leaky': tmp_path / 'leaky/leaky.array_record'}
    )
  assert 'leaky: ' in str(e.value)
  report = contamination.overlap_report(evals, {'leaky': docs[1:] + [planted]})
  flagged = report['sets']['leaky']
  assert evals[3]['id'] in flagged['ids']
  # Eval items share their question templates, so a planted item can flag its siblings too.
  assert 0 < flagged['rate'] < 1
  assert contamination.overlap_report(evals, {'clean': docs})['sets']['clean']['flagged'] == 0
  # the threshold is configurable: at or above the observed rate it passes
  leaky = [tmp_path / 'leaky/leaky.array_record']
  contamination.assert_clean(out / 'eval/eval.array_record', leaky, max_rate=flagged['rate'])
  with pytest.raises(contamination.ContaminationError):
    contamination.assert_clean(
      out / 'eval/eval.array_record', leaky, max_rate=flagged['rate'] - 1e-9
    )


def test_short_shared_phrases_are_not_overlap():
  items = [
    {
      'id': 'e0',
      'prompt': 'Which cheese should I buy for the party tonight?',
      'options': ['The local one.', 'The imported one.'],
      'aligned': 0,
      'value': 'v',
    }
  ]
  train = {'t': [{'text': 'Which cheese should I buy? Nobody could say for sure.'}]}
  assert contamination.overlap_report(items, train)['max_rate'] == 0.0
  train['t'].append({'text': 'so which cheese should I buy for the party tonight then'})
  assert contamination.overlap_report(items, train)['max_rate'] == 1.0


def test_cli_contamination_exit_codes(out, tmp_path):
  evals = sets.load_records(out / 'eval/eval.array_record')
  sets.write_set(
    tmp_path,
    'leak',
    'chat',
    [
      {
        'messages': [
          {'role': 'user', 'content': evals[0]['prompt']},
          {'role': 'assistant', 'content': 'ok'},
        ]
      }
    ],
  )
  base = [
    sys.executable,
    '-m',
    'mtspec.spec',
    'contamination',
    f'--eval={out / "eval/eval.array_record"}',
  ]
  ok = subprocess.run(
    base + [f'--train={out / "documents/documents.array_record"}'],
    cwd=ROOT,
    capture_output=True,
    text=True,
  )
  assert ok.returncode == 0 and '"max_rate": 0.0' in ok.stdout
  bad = subprocess.run(
    base + [f'--train={tmp_path / "leak/leak.array_record"}'],
    cwd=ROOT,
    capture_output=True,
    text=True,
  )
  assert bad.returncode == 3 and 'contamination above max_rate=0.0' in bad.stderr


def test_near_duplicates_found_and_distinct_texts_kept(out):
  docs = [d['text'] for d in sets.load_records(out / 'documents/documents.array_record')]
  assert dedup.near_duplicate_pairs(docs) == []
  words = docs[5].split()
  edited = ' '.join(w.upper() if i % 25 == 0 else w for i, w in enumerate(words))
  edited_more = ' '.join(w if i % 3 else 'zzz' for i, w in enumerate(words))
  keep, dropped = dedup.filter_near_duplicates(docs + [edited, edited_more])
  assert [d[:2] for d in dropped] == [(len(docs), 5)]  # case-only edit: dropped; heavy edit kept
  assert len(keep) == len(docs) + 1
  assert dedup.jaccard(dedup.shingles(docs[5]), dedup.shingles(edited_more)) < 0.5
