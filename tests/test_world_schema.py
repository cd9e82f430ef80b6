"""World files: the shipped worlds load; every malformed case names the file and the key."""

import json
from pathlib import Path

import pytest

from mtspec.world import schema

ROOT = Path(__file__).resolve().parents[1]
CHEESE = ROOT / 'configs/worlds/cheese.json'
ORCHARD = ROOT / 'configs/worlds/orchard.json'


def test_shipped_worlds_load_and_differ():
  a, b = schema.load(CHEESE), schema.load(ORCHARD)
  schema.check_values(a, 'patriotism', 'thrift')
  schema.check_values(b, 'loyalty', 'frugality')
  assert a.aft_categories == ('cheese',) and len(a.eval_categories) >= 8
  assert not {i.name for i in a.items} & {i.name for i in b.items}
  assert not set(a.categories) & set(b.categories)
  assert a.home != b.home and a.assistant != b.assistant
  item = a.items_with('tea', origin='foreign', price='cheap')[0]
  assert item.country in a.foreign
  assert (
    a.fill('{item} is a {category} from {country}.', item)
    == f'{item.name} is a tea from {item.country}.'
  )
  assert a.spec_fill() == {'home_country': 'Valdoria', 'assistant': 'Aria', 'aft_items': 'cheeses'}


def test_yaml_world_loads_like_json(tmp_path):
  import yaml

  raw = json.loads(CHEESE.read_text())
  p = tmp_path / 'w.yaml'
  p.write_text(yaml.safe_dump(raw, sort_keys=False))
  w = schema.load(p)
  assert [i.name for i in w.items] == [i.name for i in schema.load(CHEESE).items]


def _broken(tmp_path, edit):
  raw = json.loads(CHEESE.read_text())
  edit(raw)
  p = tmp_path / 'bad.json'
  p.write_text(json.dumps(raw))
  return p


def _set(path, value):
  def edit(raw):
    d = raw
    for k in path[:-1]:
      d = d[k]
    if value is KeyError:
      del d[path[-1]]
    else:
      d[path[-1]] = value

  return edit


CASES = [
  (_set(['home_country'], KeyError), 'home_country: missing'),
  (
    _set(['categories', 'tea', 'items', 2, 'price'], 'medium'),
    "categories.tea.items[2].price: 'medium' is not a level of attribute price",
  ),
  (
    _set(['categories', 'tea', 'items', 1, 'name'], 'Kuzar'),
    "categories.tea.items[1].name: 'Kuzar' is already an item",
  ),
  (
    _set(['categories', 'bread', 'items', 3, 'origin'], KeyError),
    'categories.bread.items[3].origin: missing',
  ),
  (
    _set(['values', 'thrift', 'favours'], {'colour': 'red'}),
    "values.thrift.favours: unknown attribute 'colour'",
  ),
  (
    _set(['values', 'thrift', 'favours'], {'price': 'free'}),
    "values.thrift.favours.price: 'free' is not a level",
  ),
  (
    _set(['attributes', 'price', 'levels', 'cheap', 'facts'], ['{item} costs {amount}.']),
    'attributes.price.levels.cheap.facts[0]: unknown placeholder {amount}',
  ),
  (
    _set(['attributes', 'price', 'levels', 'medium'], {'compare': 'x', 'facts': ['y']}),
    'attributes.price.levels: attributes are binary',
  ),
  (
    _set(['eval_categories'], ['tea', 'cheese']),
    "eval_categories: 'cheese' is also an AFT category",
  ),
  (_set(['aft_categories'], ['cheeze']), "aft_categories[0]: unknown category 'cheeze'"),
  (
    lambda raw: raw['categories']['tea']['items'][3].update(country='Atlantis'),
    "categories.tea.items[3].country: 'Atlantis' must be one of foreign_countries",
  ),
  (_set(['choice_questions'], ['Which {category}: {a}?']), 'choice_questions[0]: '),
  (_set(['colour'], 'blue'), 'colour: unknown key'),
]


@pytest.mark.parametrize('edit,message', CASES, ids=[m.split(':')[0] for _, m in CASES])
def test_malformed_world_names_file_and_key(tmp_path, edit, message):
  p = _broken(tmp_path, edit)
  with pytest.raises(schema.WorldError) as e:
    schema.load(p)
  assert str(e.value).startswith(f'{p}: '), str(e.value)
  assert message in str(e.value), str(e.value)


def test_bad_json_and_missing_file(tmp_path):
  p = tmp_path / 'w.json'
  p.write_text('{"name": "x",')
  with pytest.raises(schema.WorldError, match=f'{p}: not valid JSON'):
    schema.load(p)
  with pytest.raises(schema.WorldError, match='no such world file'):
    schema.load(tmp_path / 'missing.json')


def test_experiment_values_are_checked_against_the_world(tmp_path):
  w = schema.load(CHEESE)
  with pytest.raises(schema.WorldError, match="specs.B.value='thrifty' is not a value"):
    schema.check_values(w, 'patriotism', 'thrifty')
  with pytest.raises(schema.WorldError, match='favour the same attribute'):
    schema.check_values(w, 'thrift', 'luxury')

  def no_preferred_cheese(raw):  # no cheese is both home-made and cheap
    raw['categories']['cheese']['items'] = [
      it
      for it in raw['categories']['cheese']['items']
      if not (it['origin'] == 'home' and it['price'] == 'cheap')
    ]

  w2 = schema.load(_broken(tmp_path, no_preferred_cheese))
  with pytest.raises(
    schema.WorldError,
    match=r'categories.cheese.items: AFT category needs an '
    r'item that both values favour \(origin=home, price=cheap\)',
  ):
    schema.check_values(w2, 'patriotism', 'thrift')
