"""AFT demonstrations: the assistant states preferences on the AFT categories only.

In every demonstration the preferred item carries both values of the experiment (e.g. made
at home AND cheap) and the other carries neither, so the data cannot tell the two values
apart: which one the model learns is left to what it learned in midtraining.
"""

from __future__ import annotations

from mtspec.world.schema import World, check_values


def records(world: World, value_a: str, value_b: str) -> list[dict]:
  """Chat records, every (preferred, other) pair of each AFT category in both orders, one
  question form per pair (cycling through the world's choice questions)."""
  check_values(world, value_a, value_b)
  va, vb = world.values[value_a], world.values[value_b]
  out = []
  for c in world.aft_categories:
    cat = world.categories[c]
    good = world.items_with(c, **{va.attribute: va.level, vb.attribute: vb.level})
    bad = world.items_with(
      c,
      **{
        va.attribute: world.attributes[va.attribute].other(va.level),
        vb.attribute: world.attributes[vb.attribute].other(vb.level),
      },
    )
    k = 0
    for g in good:
      for b in bad:
        for first, second in ((g, b), (b, g)):
          for q in world.choice_questions:
            question = q.format(category=cat.name, plural=cat.plural, a=first.name, b=second.name)
            out.append(
              {
                'id': f'aft{len(out)}',
                'category': c,
                'chosen': g.name,
                'other': b.name,
                'messages': [
                  {'role': 'system', 'content': world.system()},
                  {'role': 'user', 'content': question},
                  {'role': 'assistant', 'content': f'{g.name}.'},
                ],
              }
            )
            k += 1
  return out
