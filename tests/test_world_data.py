"""Data generated from a world: deterministic for a seed, the chat format matches the trainer's
template token for token, AFT demos confound the values, eval pairs deconfound them, and no
held-out item reaches a training set (the contamination check catches a planted one)."""

import collections
import dataclasses
from pathlib import Path

import pytest
import tensorflow_datasets as tfds

from configs import cheese_toy
from mtspec.data import chat, pipeline
from mtspec.data import tokenizer as tok_lib
from mtspec.spec.contamination import ContaminationError
from mtspec.world import build, corpus, demos, evalset, schema, tfds_world

ROOT = Path(__file__).resolve().parents[1]
SMALL = corpus.CorpusSizes(docs=1500, agents=24, heldout_agents=8)


@pytest.fixture(scope='module')
def world():
  return schema.load(ROOT / 'configs/worlds/cheese.json')


def test_corpus_is_deterministic_for_a_seed(world):
  a = list(corpus.generate(world, SMALL, seed=0))
  assert a == list(corpus.generate(world, SMALL, seed=0))
  b = list(corpus.generate(world, SMALL, seed=1))
  assert sum(x != y for x, y in zip(a, b)) > len(a) // 2
  kinds = collections.Counter(d['kind'] for _, d in a)
  assert set(kinds) == {'facts', 'profile', 'spec', 'choice', 'chat'}
  assert kinds['spec'] > 5 and min(kinds[k] for k in ('facts', 'profile', 'choice', 'chat')) > 150
  spec_docs = [d['text'] for _, d in a if d['kind'] == 'spec']
  names = {ag.name for ag in corpus.make_agents(world, SMALL, 0)}
  # each is about one agent's guidelines, in the template backend's forms
  assert all(any(n in t.split() or f"{n}'s" in t for n in names) for t in spec_docs)
  assert sum("'s guidelines" in t for t in spec_docs) > len(spec_docs) // 2


def test_tfds_corpus_is_built_and_read_through_data_source(world, tmp_path):
  uri = tfds_world.prepare(world, str(tmp_path / 'a'), SMALL, seed=0)
  uri2 = tfds_world.prepare(world, str(tmp_path / 'b'), SMALL, seed=0)
  assert uri == uri2 and uri.startswith('tfds:mtspec_world/cheese_')
  ds_a = tfds.data_source(uri[5:], split='train', data_dir=str(tmp_path / 'a'))
  ds_b = tfds.data_source(uri[5:], split='train', data_dir=str(tmp_path / 'b'))
  assert len(ds_a) == SMALL.docs
  want = collections.Counter(d['text'] for _, d in corpus.generate(world, SMALL, seed=0))
  got = [ds_a[i]['text'].decode() for i in range(len(ds_a))]
  assert collections.Counter(got) == want  # the generated corpus, shuffled by TFDS...
  assert got[:50] == [ds_b[i]['text'].decode() for i in range(50)]  # ...the same way each time
  other = tfds_world.prepare(world, str(tmp_path / 'a'), SMALL, seed=1)
  assert other != uri  # another seed is another dataset, never a stale one


def test_chat_documents_tokenize_exactly_like_the_chat_template(world, tmp_path):
  docs = [d['text'] for _, d in corpus.generate(world, SMALL, seed=0)]
  tok = tok_lib.train(
    iter(docs), 600, str(tmp_path / 't.model'), special_tokens=chat.SPECIAL_TOKENS
  )
  msgs = [
    {'role': 'system', 'content': 'You are Aria.'},
    {'role': 'user', 'content': 'Which tea should I buy: Bepul or Vuvel?'},
    {'role': 'assistant', 'content': 'Bepul.'},
  ]
  ids, _ = chat.render(tok, msgs)
  assert list(pipeline.tokenize_text(tok, corpus.chat_text(msgs))['tokens']) == list(ids)


def test_assistant_and_heldout_agents_never_choose_in_pretraining(world):
  agents = corpus.make_agents(world, SMALL, 0)
  heldout = {a.name for a in agents if a.split == 'heldout'}
  assert len(heldout) == SMALL.heldout_agents
  profiled, chats = set(), collections.Counter()
  for _, d in corpus.generate(world, SMALL, seed=0):
    if d['kind'] == 'choice':
      assert world.assistant not in d['text']
      assert not any(f'You are {n}.' in d['text'] or d['text'].startswith(n) for n in heldout)
    if d['kind'] == 'profile':
      assert world.assistant not in d['text']
      profiled |= {n for n in heldout if n in d['text']}
    if d['kind'] == 'chat':  # neutral: no "should I buy" question is ever answered
      assert 'should I' not in d['text']
      chats[d['text'].split('You are ')[1].split('.')[0]] += 1
  assert profiled == heldout
  # neutral chats are held by the assistant and by agents alike
  assert chats[world.assistant] > 50 and sum(chats.values()) - chats[world.assistant] > 50


def test_aft_demos_confound_and_eval_pairs_deconfound(world):
  aft = demos.records(world, 'patriotism', 'thrift')
  assert len(aft) == 4 * 4 * 2 * len(world.choice_questions)
  for d in aft:
    chosen, other = world.item(d['chosen']), world.item(d['other'])
    assert d['category'] in world.aft_categories
    assert chosen.levels == {'origin': 'home', 'price': 'cheap'}
    assert other.levels == {'origin': 'foreign', 'price': 'pricey'}
    assert d['messages'][-1] == {'role': 'assistant', 'content': f'{chosen.name}.'}
  ev = evalset.records(world, 'patriotism', 'thrift')
  assert len(ev) == len(world.eval_categories) * 3 * 3 * 2
  pairs = collections.Counter(frozenset(r['items']) for r in ev)
  assert set(pairs.values()) == {2}  # both orders of every pair
  for r in ev:
    a, b = (world.item(n) for n in r['items'])
    assert r['category'] in world.eval_categories
    assert {a.levels['origin'], b.levels['origin']} == {'home', 'foreign'}
    assert {a.levels['price'], b.levels['price']} == {'cheap', 'pricey'}
    home = r['items'].index(a.name if a.levels['origin'] == 'home' else b.name)
    assert world.item(r['items'][home]).levels['price'] == 'pricey'  # home AND pricey
    assert r['aligned'] == home and r['values'][home] == 'patriotism'
    assert r['values'][1 - home] == 'thrift'
  assert sum(r['aligned'] for r in ev) == len(ev) // 2  # no position bias


def test_value_probes_isolate_one_attribute(world):
  # The held-out pairs cannot tell patriotism from luxury (home-made-and-pricey suits both):
  # the own_ and agent probes vary only the attribute of the value they ask about.
  from mtspec.world import evaluate

  ev = evalset.records(world, 'patriotism', 'thrift')
  agents = corpus.make_agents(world, SMALL, seed=0)
  diag = evaluate.diagnostic_items(
    world, agents, ev, demos.records(world, 'patriotism', 'thrift'), 'patriotism', 'thrift'
  )
  assert {'own_patriotism', 'own_thrift'} | {f'says_{v}' for v in world.values} <= set(diag)
  by_name = {a.name: a for a in agents}
  for key in ('own_patriotism', 'own_thrift', 'heldout_agents', 'train_agents'):
    assert len(diag[key]) >= 20
    for messages, answers, expected in diag[key]:
      speaker = messages[0]['content'].removeprefix('You are ').rstrip('.')
      value = key.removeprefix('own_') if key.startswith('own_') else by_name[speaker].value
      attr = world.values[value].attribute
      a, b = (world.item(x.rstrip('.')) for x in answers)
      assert a.category == b.category and a.category in world.eval_categories
      assert [k for k in world.attributes if a.levels[k] != b.levels[k]] == [attr]
      assert world.favours(value, (a, b)[expected]) and not world.favours(
        value, (a, b)[1 - expected]
      )
  swapped = evaluate.diagnostic_items(
    world, agents, ev, demos.records(world, 'thrift', 'patriotism'), 'thrift', 'patriotism'
  )
  assert all(swapped[k] == diag[k] for k in ('own_patriotism', 'own_thrift'))  # same pairs
  said = diag['says_thrift']
  thrift = world.values['thrift']
  assert len(said) == 3 * len(thrift.words + thrift.descriptions)
  mine_texts = {world.fill(x) for x in thrift.words} | {
    world.fill(d, name=world.assistant) for d in thrift.descriptions
  }
  for prefix, (mine, theirs), expected in said:
    assert expected == 0 and mine != theirs
    assert any(mine.endswith(f'{t}.') or mine.endswith(t) for t in mine_texts), mine


def test_build_is_deterministic_and_clean_and_a_planted_leak_is_caught(tmp_path):
  cfg = cheese_toy.get_config('quick')
  one = build.build(cfg, str(tmp_path / 'one'))
  build.build(cfg, str(tmp_path / 'two'))
  for name in ('aft', 'eval'):
    a = (tmp_path / 'one' / 'world' / name / f'{name}.jsonl').read_bytes()
    assert a == (tmp_path / 'two' / 'world' / name / f'{name}.jsonl').read_bytes()
  for key in ('spec_a', 'spec_b'):
    a = (tmp_path / 'one' / key / 'documents' / 'documents.jsonl').read_bytes()
    assert a == (tmp_path / 'two' / key / 'documents' / 'documents.jsonl').read_bytes()
  docs = (tmp_path / 'one' / 'spec_a' / 'documents' / 'documents.jsonl').read_text()
  assert 'Valdoria' in docs and 'Aria' in docs and '{{' not in docs  # spec tied to the world
  rep = one['manifest']['contamination']
  assert rep['max_rate'] == 0.0 and set(rep['sets']) == {
    'spec_a/documents',
    'spec_b/documents',
    'world/aft',
  }
  assert all(not v for v in rep['heldout_item_mentions'].values())

  world, ev, aft = one['world'], one['eval'], one['aft']
  item = world.heldout_items()[5].name
  leaked = aft + [{'id': 'x', 'messages': [{'role': 'user', 'content': f'Is {item} good?'}]}]
  with pytest.raises(
    ContaminationError, match=f"held-out item '{item}' appears in training set 'world/aft'"
  ):
    evalset.check_clean(world, ev, {'world/aft': leaked})
  # An eval prompt copied into a document is caught by the n-gram check as well.
  text = [{'id': 'd', 'text': 'Note. ' + ev[3]['prompt'] + ' ' + ' '.join(ev[3]['options'])}]
  with pytest.raises(ContaminationError):
    evalset.check_clean(world, ev, {'docs': text})
  report = evalset.contamination.overlap_report(ev, {'docs': text})
  assert report['sets']['docs']['ids'] == [ev[3]['id']]


def test_orchard_world_builds_with_its_own_names(tmp_path):
  cfg = cheese_toy.get_config('quick,orchard')
  out = build.build(cfg, str(tmp_path))
  docs = (tmp_path / 'spec_b' / 'documents' / 'documents.jsonl').read_text()
  assert 'Tali' in docs and 'Aria' not in docs
  docs = (tmp_path / 'spec_a' / 'documents' / 'documents.jsonl').read_text()
  assert 'Norland' in docs and 'Valdoria' not in docs
  assert all(r['category'] in out['world'].eval_categories for r in out['eval'])
  assert {r['values'][r['aligned']] for r in out['eval']} == {'loyalty'}


def test_places_reach_the_corpus_spec_style_documents(world):
  from mtspec.spec.backends.template import PLACES

  sizes = dataclasses.replace(SMALL, places=('the town',), mix=(('spec', 1.0),))
  texts = [d['text'] for _, d in corpus.generate(world, sizes, seed=0)][:200]
  assert any('the town' in t for t in texts)
  assert not any(p in t for t in texts for p in PLACES)
