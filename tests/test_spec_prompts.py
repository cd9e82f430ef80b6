"""Robust parsing of model answers: tolerate chatter and fences, reject what is broken."""

import pytest

from mtspec.spec import prompts
from mtspec.spec.prompts import ParseError, parse

INP = {'section_ids': ['honesty', 'privacy']}


def test_list_answers_tolerate_chatter_fences_and_extra_items():
  text = (
    'Sure! Here is my plan first.\n<answer>\n```json\n[{"statement": " A ", '
    '"explanation": "B"}, {"statement": "C", "explanation": "D"}, '
    '{"statement": "E", "explanation": "F"}]\n```\n</answer> Hope that helps.'
  )
  assert parse('assertions', INP, 2, text) == [
    {'statement': 'A', 'explanation': 'B'},
    {'statement': 'C', 'explanation': 'D'},
  ]
  bare = 'Ideas: [{"idea": "one"}, {"idea": "two"}] done'
  assert parse('ideas', INP, 2, bare) == ['one', 'two']


@pytest.mark.parametrize(
  'level,n,text,why',
  [
    ('ideas', 3, '<answer>[{"idea": "a"}, {"idea": "b"}]</answer>', 'expected a JSON list'),
    ('ideas', 1, '<answer>[{"idea": "a"}, {"idea": </answer>', 'invalid JSON'),
    ('ideas', 1, 'I cannot help with that.', 'no JSON'),
    ('assertions', 1, '<answer>[{"statement": "a"}]</answer>', 'lacks string keys'),
    (
      'domains',
      1,
      '<answer>[{"title": "t", "description": "d", "section_ids": ["nope"]}]</answer>',
      'no valid section id',
    ),
    ('documents', 1, '<plan>p</plan><document>' + 'word ' * 100, 'no complete <document>'),
    ('documents', 1, '<document>too short</document>', 'too short'),
    ('aft', 1, '<assistant>hi</assistant><user>hello</user>', 'alternate'),
    ('eval', 1, '<answer>{"prompt": "p", "aligned_option": "a"}</answer>', 'lacks string keys'),
  ],
)
def test_broken_answers_raise(level, n, text, why):
  with pytest.raises(ParseError, match=why):
    parse(level, INP, n, text)


def test_domains_keep_only_valid_ids_and_chat_keeps_reasoning():
  text = '<answer>[{"title": "T", "description": "D", "section_ids": ["honesty", "x"]}]</answer>'
  assert parse('domains', INP, 1, text)[0]['section_ids'] == ['honesty']
  conv = parse(
    'aft',
    INP,
    1,
    '<user> Hi </user><reasoning>think</reasoning>'
    '<assistant>Hello</assistant><user>More?</user><assistant>Yes</assistant>',
  )
  assert [m['role'] for m in conv['messages']] == ['user', 'assistant', 'user', 'assistant']
  assert conv['messages'][0]['content'] == 'Hi' and conv['reasoning'] == 'think'


def test_every_level_has_a_prompt_and_version():
  from mtspec.spec.backends.base import LEVELS

  assert set(prompts.VERSIONS) == set(LEVELS)
  with pytest.raises(ValueError):
    prompts.render('nonsense', {}, 1)
