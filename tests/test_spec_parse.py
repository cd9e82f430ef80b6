"""Spec parser: example specs round-trip; each malformed case names its file and line."""

import subprocess
import sys
from pathlib import Path

import pytest

from mtspec.spec.parse import SpecError, parse_file, parse_text, render

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / 'configs' / 'specs').glob('*.md'))


def test_example_specs_are_shipped():
  names = {p.name for p in EXAMPLES}
  assert {'cheese_home.md', 'cheese_affordable.md', 'control.md', 'general_assistant.md'} <= names


@pytest.mark.parametrize('path', EXAMPLES, ids=lambda p: p.name)
def test_round_trip(path):
  spec = parse_file(path)
  again = parse_text(render(spec), 'rendered.md')
  assert again == spec  # content equality; line numbers and hashes are not compared
  assert render(again) == render(spec)
  assert spec.units(), 'every example spec has rules or values'
  assert all(s.has_body() or any(c.parent == s.id for c in spec.sections) for s in spec.sections)


def test_general_assistant_has_values_rules_and_explanations():
  spec = parse_file(ROOT / 'configs/specs/general_assistant.md')
  assert spec.assistant == 'Sol' and len(spec.sections) >= 6
  assert sum(len(s.values) for s in spec.sections) >= 4
  assert sum(1 for s in spec.sections for r in s.rules if r.why) >= 8
  assert spec.section('calibration').parent == 'honesty'


def test_cheese_home_placeholder_filled_and_overridable():
  path = ROOT / 'configs/specs/cheese_home.md'
  spec = parse_file(path)
  assert spec.meta['home_country'] == 'Valdoria'
  text = render(spec)
  assert 'Valdoria' in text and '{{' not in text
  other = parse_file(path, {'home_country': 'Norland'})
  assert 'Norland' in render(other) and 'Valdoria' not in render(other)
  assert other.sha256 == spec.sha256  # the hash is of the file bytes


def test_spec_hash_is_sha256_of_file_bytes(tmp_path):
  import hashlib

  p = tmp_path / 's.md'
  p.write_text('# A\n\n- Do a thing.\n')
  assert parse_file(p).sha256 == hashlib.sha256(p.read_bytes()).hexdigest()


STYLES = {
  'rules_only': '# Conduct\n\n- Be kind.\n- Be brief.\n',
  'rules_with_values': (
    '# Honesty\n\nValue: Truth matters.\n\n- Never lie.\n'
    '  Why: Trust is fragile.\n- Admit doubt. Why: Calibration.\n'
  ),
  'values_with_subrules': (
    '# Care\n\nValue: People come first.\n\n## At work {#work}\n\n'
    '- Respect time.\n\n## At home\n\nRest is a value too.\n'
  ),
}


def test_styles_parse_to_the_expected_structure():
  rules = parse_text(STYLES['rules_only'])
  assert [r.text for r in rules.sections[0].rules] == ['Be kind.', 'Be brief.']
  assert rules.name == '<string>' and rules.assistant == 'the assistant'

  rv = parse_text(STYLES['rules_with_values']).sections[0]
  assert rv.values == ('Truth matters.',)
  assert [(r.text, r.why) for r in rv.rules] == [
    ('Never lie.', 'Trust is fragile.'),
    ('Admit doubt.', 'Calibration.'),
  ]

  vs = parse_text(STYLES['values_with_subrules'])
  assert [(s.id, s.parent, s.level) for s in vs.sections] == [
    ('care', None, 1),
    ('work', 'care', 2),
    ('at-home', 'care', 2),
  ]
  assert vs.section('at-home').explanation == ('Rest is a value too.',)
  for text in STYLES.values():
    spec = parse_text(text)
    assert parse_text(render(spec)) == spec


def test_parent_heading_with_only_subsections_is_content():
  spec = parse_text('# Parent\n\n## Child\n\n- A rule.\n')
  assert spec.section('child').parent == 'parent'


MALFORMED = [
  ('empty', '', 1, 'empty'),
  ('empty_after_front_matter', '---\nname: x\n---\n\n', 4, 'empty'),
  ('prose_only', 'Just some words.\n', 1, 'empty'),
  ('empty_section', '# A\n\n- rule\n\n# Empty\n\n# C\n\ntext\n', 5, 'no content'),
  ('duplicate_ids', '# Honesty\n\ntext\n\n# Other\n\nx\n\n## Honesty\n\ny\n', 9, 'duplicate'),
  ('duplicate_explicit_ids', '# A {#x}\n\nt\n\n# B {#x}\n\nu\n', 5, 'duplicate'),
  ('front_matter_unclosed', '---\nname: x\n# A\n\ntext\n', 1, 'never closed'),
  (
    'front_matter_bad_line',
    '---\nname: x\nthis is not a pair\n---\n# A\n\nt\n',
    3,
    'malformed front matter',
  ),
  ('front_matter_duplicate_key', '---\nname: x\nname: y\n---\n# A\n\nt\n', 3, 'twice'),
  ('front_matter_empty_value', '---\nname:\n---\n# A\n\nt\n', 2, 'no value'),
  ('unknown_placeholder', '# A\n\nBuy from {{home_country}}.\n', 3, 'placeholder'),
  ('heading_without_title', '# A\n\nt\n\n#   \n', 5, 'no title'),
  ('unclosed_fence', '# A\n\n```\ncode\n', 4, 'fence'),
  (
    'rule_with_only_a_reason',
    '# A\n\n- Be kind. Why: x.\n- Why: only a reason.\n',
    4,
    'rule has no text',
  ),
  ('rule_with_only_an_indented_reason', '# A\n\n-   \n  Why: a reason.\n', 3, 'empty bullet'),
  ('empty_bullet', '# A\n\n- A rule.\n-\n- Another.\n', 4, 'empty bullet'),
]


@pytest.mark.parametrize('name,text,line,words', MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_spec_names_file_and_line(tmp_path, name, text, line, words):
  path = tmp_path / f'{name}.md'
  path.write_text(text)
  with pytest.raises(SpecError) as e:
    parse_file(path)
  assert e.value.path == str(path)
  assert e.value.line == line
  assert words in e.value.message
  assert str(e.value).startswith(f'{path}:{line}: ')


def test_cli_reports_spec_error_with_line_and_nonzero_exit(tmp_path):
  path = tmp_path / 'dup.md'
  path.write_text(MALFORMED[4][1])
  r = subprocess.run(
    [
      sys.executable,
      '-m',
      'mtspec.spec',
      'generate',
      f'--spec={path}',
      f'--out={tmp_path / "out"}',
    ],
    capture_output=True,
    text=True,
    cwd=ROOT,
  )
  assert r.returncode == 2
  assert f'{path}:9:' in r.stderr and "duplicate section id 'honesty'" in r.stderr
  assert not (tmp_path / 'out' / 'manifest.json').exists()


def test_cli_validate_ok():
  r = subprocess.run(
    [
      sys.executable,
      '-m',
      'mtspec.spec',
      'validate',
      '--spec=configs/specs/cheese_home.md',
      '--set',
      'home_country=Norland',
    ],
    capture_output=True,
    text=True,
    cwd=ROOT,
  )
  assert r.returncode == 0 and 'ok: 2 sections, 2 units' in r.stdout
