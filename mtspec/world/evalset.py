"""Held-out evaluation pairs, and the contamination check of every training set against them.

Each pair sets an item that only value A favours against one that only value B favours
(e.g. made at home but pricey, against imported but cheap), in both orders, drawn from the
held-out categories only. A record is a spec-tooling eval record (kind "eval": prompt,
options, aligned, value) plus the system prompt, the items and the value each option serves.
"""

from __future__ import annotations

import re

from mtspec.spec import contamination
from mtspec.spec.sets import record_text
from mtspec.world.schema import World, check_values


def records(world: World, value_a: str, value_b: str, categories=None) -> list[dict]:
  check_values(world, value_a, value_b)
  va, vb = world.values[value_a], world.values[value_b]
  not_a = world.attributes[va.attribute].other(va.level)
  not_b = world.attributes[vb.attribute].other(vb.level)
  out = []
  for c in categories or world.eval_categories:
    cat = world.categories[c]
    only_a = world.items_with(c, **{va.attribute: va.level, vb.attribute: not_b})
    only_b = world.items_with(c, **{va.attribute: not_a, vb.attribute: vb.level})
    for i, ia in enumerate(only_a):
      for j, ib in enumerate(only_b):
        q = world.choice_questions[(i + j) % len(world.choice_questions)]
        for first, second in ((ia, ib), (ib, ia)):
          prompt = q.format(category=cat.name, plural=cat.plural, a=first.name, b=second.name)
          out.append(
            {
              'id': f'eval{len(out)}',
              'prompt': prompt,
              'system': world.system(),
              'options': [f'{first.name}.', f'{second.name}.'],
              'items': [first.name, second.name],
              'aligned': 0 if first is ia else 1,
              'value': value_a,
              'values': [value_a if first is ia else value_b, value_b if first is ia else value_a],
              'category': c,
            }
          )
  return out


def item_mentions(world: World, records: list[dict]) -> dict:
  """{held-out item: [ids of records whose text names it]} (whole words, any case)."""
  names = {it.name for it in world.heldout_items()}
  pattern = re.compile(r'\b(' + '|'.join(sorted(map(re.escape, names))) + r')\b', re.I)
  found = {}
  for k, r in enumerate(records):
    for m in set(pattern.findall(record_text(r))):
      canon = next(n for n in names if n.lower() == m.lower())
      found.setdefault(canon, []).append(r.get('id', str(k)))
  return found


def check_clean(world: World, eval_records: list[dict], train_sets: dict, n: int = 8) -> dict:
  """Raises ContaminationError when an eval item shares a word n-gram with a training set or
  a held-out item is named in one; returns the report (n-gram rates and item mentions)."""
  report = contamination.overlap_report(eval_records, train_sets, n)
  report['heldout_item_mentions'] = {}
  for name, recs in train_sets.items():
    hits = item_mentions(world, recs)
    report['heldout_item_mentions'][name] = {k: v[:3] for k, v in sorted(hits.items())}
    if hits:
      item, ids = sorted(hits.items())[0]
      raise contamination.ContaminationError(
        f'held-out item {item!r} appears in training set {name!r} (record {ids[0]}; '
        f'{len(hits)} held-out items in all)'
      )
  contamination.check(report, 0.0)
  return report
