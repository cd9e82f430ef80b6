"""A world file (JSON or YAML) -> a validated `World`; every error names the file and key.

A world declares a home country and foreign ones, binary attributes (each level with fact
templates), categories of invented items with a level for every attribute, the values people
can hold (which attribute level each favours, and words that describe it), and which
categories train the AFT phase and which are held out for evaluation. See
configs/worlds/cheese.json for a complete example.

Templates may use {item}, {category}, {plural}, {country}, {home} and, in value texts, {name}.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import string
from pathlib import Path

from mtspec import paths

FIELDS = {'item', 'category', 'plural', 'country', 'home', 'name', 'assistant'}


class WorldError(ValueError):
  """A malformed world file; the message starts with `<file>: <key>:`."""


@dataclasses.dataclass(frozen=True)
class Level:
  name: str
  facts: tuple[str, ...]  # sentences stating that an item has this level
  compare: str  # predicate for "which {category} <compare>: A or B?"
  country: str  # 'home' | 'foreign' | '' (the level says where an item is made)


@dataclasses.dataclass(frozen=True)
class Attribute:
  name: str
  levels: tuple[Level, Level]
  questions: tuple[str, ...]  # asked about one item; answered with a fact of its level

  def level(self, name: str) -> Level:
    return next(l for l in self.levels if l.name == name)

  def other(self, name: str) -> str:
    return next(l.name for l in self.levels if l.name != name)


@dataclasses.dataclass(frozen=True)
class Value:
  name: str
  attribute: str
  level: str
  words: tuple[str, ...]  # short descriptions ("thrifty", "careful with money")
  descriptions: tuple[str, ...]  # sentences with {name}


@dataclasses.dataclass(frozen=True)
class Item:
  name: str
  category: str
  levels: dict  # attribute -> level name
  country: str


@dataclasses.dataclass(frozen=True)
class Category:
  name: str
  plural: str
  items: tuple[Item, ...]


@dataclasses.dataclass(frozen=True)
class World:
  path: str
  name: str
  sha256: str
  home: str
  foreign: tuple[str, ...]
  assistant: str
  system_prompt: str
  attributes: dict  # name -> Attribute
  values: dict  # name -> Value
  categories: dict  # name -> Category
  aft_categories: tuple[str, ...]
  eval_categories: tuple[str, ...]
  choice_questions: tuple[str, ...]  # "Which {category} should I buy: {a} or {b}?"
  raw: dict = dataclasses.field(compare=False, repr=False, default=None)

  @property
  def items(self) -> list[Item]:
    return [it for c in self.categories.values() for it in c.items]

  def item(self, name: str) -> Item:
    return next(it for it in self.items if it.name == name)

  def items_with(self, category: str, **levels) -> list[Item]:
    return [
      it
      for it in self.categories[category].items
      if all(it.levels[a] == l for a, l in levels.items())
    ]

  def favours(self, value: str, item: Item) -> bool:
    v = self.values[value]
    return item.levels[v.attribute] == v.level

  def heldout_items(self) -> list[Item]:
    return [it for c in self.eval_categories for it in self.categories[c].items]

  def system(self, name: str | None = None) -> str:
    return self.system_prompt.format(assistant=name or self.assistant)

  def spec_fill(self) -> dict:
    """Front-matter values that tie a spec file to this world ({{home_country}} etc.)."""
    plurals = [self.categories[c].plural for c in self.aft_categories]
    return {
      'home_country': self.home,
      'assistant': self.assistant,
      'aft_items': ' and '.join(plurals),
    }

  def fill(self, template: str, item: Item | None = None, **extra) -> str:
    f = {'home': self.home, 'assistant': self.assistant, **extra}
    if item is not None:
      c = self.categories[item.category]
      f.update(item=item.name, category=c.name, plural=c.plural, country=item.country)
    return template.format(**f)


class _Reader:
  """Typed access to the raw dict with errors naming the file and the key path."""

  def __init__(self, path: str):
    self.path = path

  def fail(self, key: str, msg: str):
    raise WorldError(f'{self.path}: {key}: {msg}')

  def get(self, d: dict, key: str, where: str, kind, default=...):
    full = f'{where}.{key}' if where else key
    if key not in d:
      if default is ...:
        self.fail(full, 'missing (required)')
      return default
    v = d[key]
    if kind is str and not (isinstance(v, str) and v.strip()):
      self.fail(full, f'expected a non-empty string, got {v!r}')
    if kind is list and not (isinstance(v, list) and v):
      self.fail(full, f'expected a non-empty list, got {v!r}')
    if kind is dict and not (isinstance(v, dict) and v):
      self.fail(full, f'expected a non-empty mapping, got {v!r}')
    return v

  def entries(self, d: dict, key: str, where: str, expected: str):
    """(name, key path, entry) of a non-empty mapping whose entries must be mappings."""
    full = f'{where}.{key}' if where else key
    for name, entry in self.get(d, key, where, dict).items():
      if not isinstance(entry, dict):
        self.fail(f'{full}.{name}', expected)
      yield name, f'{full}.{name}', entry

  def strings(self, d: dict, key: str, where: str, allowed=FIELDS, default=...):
    v = self.get(d, key, where, list, default)
    full = f'{where}.{key}' if where else key
    for i, s in enumerate(v):
      if not (isinstance(s, str) and s.strip()):
        self.fail(f'{full}[{i}]', f'expected a non-empty string, got {s!r}')
      self.template(s, f'{full}[{i}]', allowed)
    return tuple(v)

  def template(self, s: str, key: str, allowed=FIELDS):
    try:
      names = {f for _, f, _, _ in string.Formatter().parse(s) if f is not None}
    except ValueError as e:
      self.fail(key, f'bad template {s!r}: {e}')
    bad = names - set(allowed)
    if bad:
      self.fail(
        key,
        f'unknown placeholder {{{sorted(bad)[0]}}} in {s!r} '
        f'(allowed: {", ".join(sorted(allowed))})',
      )


def _read(path: str) -> dict:
  if not paths.exists(path):
    raise WorldError(f'{path}: no such world file')
  text = paths.read_text(path)
  yaml_file = path.endswith(('.yaml', '.yml'))
  try:
    if yaml_file:
      import yaml

      data = yaml.safe_load(text)
    else:
      data = json.loads(text)
  except Exception as e:  # json.JSONDecodeError / yaml.YAMLError
    raise WorldError(f'{path}: not valid {"YAML" if yaml_file else "JSON"}: {e}') from None
  if not isinstance(data, dict):
    raise WorldError(f'{path}: the top level must be a mapping')
  return data


NAME = re.compile(r"^[A-Z][A-Za-z' -]*$")


def load(path: str | Path) -> World:
  path = str(path)
  raw = _read(path)
  r = _Reader(path)
  known = {
    'name',
    'description',
    'home_country',
    'foreign_countries',
    'assistant',
    'system_prompt',
    'attributes',
    'values',
    'categories',
    'aft_categories',
    'eval_categories',
    'choice_questions',
  }
  for k in raw:
    if k not in known:
      r.fail(k, f'unknown key (expected one of {", ".join(sorted(known))})')
  name = r.get(raw, 'name', '', str)
  home = r.get(raw, 'home_country', '', str)
  foreign = tuple(r.strings(raw, 'foreign_countries', '', allowed=()))
  if home in foreign:
    r.fail('foreign_countries', f'lists the home country {home!r}')
  if len(set(foreign)) != len(foreign):
    r.fail('foreign_countries', 'has duplicates')
  assistant = r.get(raw, 'assistant', '', str)
  system_prompt = r.get(raw, 'system_prompt', '', str, 'You are {assistant}.')
  r.template(system_prompt, 'system_prompt', {'assistant'})

  attributes = {}
  for a, where, spec in r.entries(
    raw, 'attributes', '', 'expected a mapping with levels and questions'
  ):
    levels_raw = r.get(spec, 'levels', where, dict)
    if len(levels_raw) != 2:
      r.fail(
        f'{where}.levels',
        f'attributes are binary: expected 2 levels, got '
        f'{len(levels_raw)} ({", ".join(levels_raw)})',
      )
    levels = []
    for ln, lw, lspec in r.entries(
      spec, 'levels', where, 'expected a mapping with facts and compare'
    ):
      country = lspec.get('country', '')
      if country not in ('', 'home', 'foreign'):
        r.fail(f'{lw}.country', f'expected home or foreign, got {country!r}')
      compare = r.get(lspec, 'compare', lw, str)
      r.template(compare, f'{lw}.compare')
      levels.append(Level(ln, r.strings(lspec, 'facts', lw), compare, country))
    attributes[a] = Attribute(a, tuple(levels), r.strings(spec, 'questions', where))
  if len(attributes) < 2:
    r.fail('attributes', 'need at least two attributes (one per value of the experiment)')

  values = {}
  for v, where, spec in r.entries(
    raw, 'values', '', 'expected a mapping with favours, words and descriptions'
  ):
    fav = r.get(spec, 'favours', where, dict)
    if len(fav) != 1:
      r.fail(f'{where}.favours', f'expected one attribute: level pair, got {fav!r}')
    ((attr, level),) = fav.items()
    if attr not in attributes:
      r.fail(f'{where}.favours', f'unknown attribute {attr!r} (have: {", ".join(attributes)})')
    if level not in [l.name for l in attributes[attr].levels]:
      r.fail(
        f'{where}.favours.{attr}',
        f'{level!r} is not a level of attribute {attr} '
        f'({", ".join(l.name for l in attributes[attr].levels)})',
      )
    values[v] = Value(
      v, attr, level, r.strings(spec, 'words', where), r.strings(spec, 'descriptions', where)
    )

  categories, seen = {}, {}
  for c, where, spec in r.entries(
    raw, 'categories', '', 'expected a mapping with plural and items'
  ):
    plural = r.get(spec, 'plural', where, str, c)
    items = []
    for i, it in enumerate(r.get(spec, 'items', where, list)):
      iw = f'{where}.items[{i}]'
      if not isinstance(it, dict):
        r.fail(iw, f'expected a mapping, got {it!r}')
      n = r.get(it, 'name', iw, str)
      if not NAME.match(n):
        r.fail(f'{iw}.name', f"{n!r} must start with a capital letter (letters, spaces, - and ')")
      if n in seen:
        r.fail(f'{iw}.name', f'{n!r} is already an item ({seen[n]})')
      if n in (home, assistant, *foreign):
        r.fail(f'{iw}.name', f'{n!r} is also a country or the assistant')
      seen[n] = iw
      levels = {}
      for a, attr in attributes.items():
        lv = r.get(it, a, iw, str)
        if lv not in [l.name for l in attr.levels]:
          r.fail(
            f'{iw}.{a}',
            f'{lv!r} is not a level of attribute {a} ({", ".join(l.name for l in attr.levels)})',
          )
        levels[a] = lv
      extra = set(it) - {'name', 'country', *attributes}
      if extra:
        r.fail(f'{iw}.{sorted(extra)[0]}', f'unknown key (attributes are: {", ".join(attributes)})')
      where_made = [
        attributes[a].level(l).country for a, l in levels.items() if attributes[a].level(l).country
      ]
      country = it.get('country', home if where_made == ['home'] else '')
      if where_made == ['foreign'] and country not in foreign:
        r.fail(
          f'{iw}.country',
          f'{country!r} must be one of foreign_countries ({", ".join(foreign)}) for a foreign item',
        )
      if where_made == ['home'] and country != home:
        r.fail(f'{iw}.country', f'{country!r}: an item of the home level is made in {home}')
      items.append(Item(n, c, levels, country or home))
    categories[c] = Category(c, plural, tuple(items))

  def category_list(key):
    cats = r.get(raw, key, '', list)
    for i, c in enumerate(cats):
      if c not in categories:
        r.fail(f'{key}[{i}]', f'unknown category {c!r} (have: {", ".join(categories)})')
    return tuple(cats)

  aft, held = category_list('aft_categories'), category_list('eval_categories')
  both = set(aft) & set(held)
  if both:
    r.fail(
      'eval_categories',
      f'{sorted(both)[0]!r} is also an AFT category; held-out categories must not be trained on',
    )
  questions = r.strings(raw, 'choice_questions', '', allowed={'category', 'plural', 'a', 'b'})
  for i, q in enumerate(questions):
    if '{a}' not in q or '{b}' not in q:
      r.fail(f'choice_questions[{i}]', f'{q!r} must contain both {{a}} and {{b}}')
  sha = hashlib.sha256(paths.read_bytes(path)).hexdigest()
  return World(
    path,
    name,
    sha,
    home,
    foreign,
    assistant,
    system_prompt,
    attributes,
    values,
    categories,
    aft,
    held,
    questions,
    raw,
  )


def check_values(world: World, value_a: str, value_b: str, where: str = 'specs') -> None:
  """The two values of an experiment must exist and favour different attributes, and the
  AFT and held-out categories must hold the items the design needs."""
  for key, v in (('A', value_a), ('B', value_b)):
    if v not in world.values:
      raise WorldError(
        f'{world.path}: values: {where}.{key}.value={v!r} is not a value of this '
        f'world (have: {", ".join(world.values)})'
      )
  va, vb = world.values[value_a], world.values[value_b]
  if va.attribute == vb.attribute:
    raise WorldError(
      f'{world.path}: values.{value_b}.favours: values {value_a} and {value_b} '
      f'favour the same attribute ({va.attribute}); they cannot be told apart'
    )
  oa = world.attributes[va.attribute].other(va.level)
  ob = world.attributes[vb.attribute].other(vb.level)
  for c in world.aft_categories:
    for la, lb, what in (
      (va.level, vb.level, 'both values favour'),
      (oa, ob, 'neither value favours'),
    ):
      if not world.items_with(c, **{va.attribute: la, vb.attribute: lb}):
        raise WorldError(
          f'{world.path}: categories.{c}.items: AFT category needs an item that '
          f'{what} ({va.attribute}={la}, {vb.attribute}={lb})'
        )
  for c in world.eval_categories:
    for la, lb in ((va.level, ob), (oa, vb.level)):
      if not world.items_with(c, **{va.attribute: la, vb.attribute: lb}):
        raise WorldError(
          f'{world.path}: categories.{c}.items: held-out category needs an item '
          f'with {va.attribute}={la}, {vb.attribute}={lb}'
        )
