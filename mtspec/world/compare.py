r"""One row per toy experiment: does each meet the bar? A claim about the toy world
needs several trunks, so this puts finished experiments side by side:

  python -m mtspec.world.compare runs/cheese_toy runs/trunk1 runs/orchard [--margin=0.2]

The bar, on spec A's value: MSM-A+AFT minus MSM-B+AFT of at least `margin` (mean over
seeds), no overlap between the two conditions' seed ranges, and AFT only between them.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from mtspec import paths
from mtspec.world import report


def _read(workdir: str, name: str) -> dict:
  path = paths.join(workdir, name)
  if not paths.exists(path):
    raise FileNotFoundError(
      f'{workdir}: no {name} (is it a finished toy experiment? '
      f'`python -m mtspec.toy ... --workdir={workdir}` writes it)'
    )
  return paths.read_json(path)


def row(workdir: str, margin: float = 0.2) -> dict:
  """The experiment's world, specs, trunk and effect, and which parts of the bar fail."""
  results = _read(workdir, 'results.json')
  trunk = next(r for r in _read(workdir, 'experiment.json')['runs'] if r['name'] == 'trunk')
  e = report.effect(results)
  if not e:
    raise ValueError(f'{workdir}/results.json: no MSM-A+AFT and MSM-B+AFT conditions')
  baseline = report.by_condition(results).get('baseline', {}).get(e['value'])
  fails = [
    why
    for why, bad in (
      (f'gap under {margin:.2f}', e['mean_gap'] < margin),
      ('seed ranges overlap', e['ranges_overlap']),
      ('AFT only not between', not e.get('aft_only_between', False)),
    )
    if bad
  ]
  own_trunk = paths.parent(paths.absolute(trunk['workdir'])) == paths.absolute(workdir)
  return {
    'workdir': workdir,
    'world': os.path.splitext(os.path.basename(results['world']))[0],
    'specs': f'{results["specs"]["A"]["value"]} / {results["specs"]["B"]["value"]}',
    'trunk': f'seed {trunk["seed"]}' + ('' if own_trunk else f' ({trunk["workdir"]})'),
    'effect': e,
    'baseline': float(np.mean(baseline)) if baseline else None,
    'fails': fails,
  }


def table(rows: list[dict]) -> str:
  out = [
    '| experiment | world | specs A / B | trunk | gap after AFT (per seed) | seed ranges '
    '| AFT only | baseline | bar |',
    '|---|---|---|---|---|---|---|---|---|',
  ]
  for r in rows:
    e = r['effect']
    per_seed = ', '.join(f'{x:+.2f}' for x in e['paired_gaps'])
    aft_only = (
      f'{e["aft_only_mean"]:.2f}, {"between" if e["aft_only_between"] else "outside"}'
      if 'aft_only_mean' in e
      else 'not run'
    )
    base = '' if r['baseline'] is None else f'{r["baseline"]:.2f}'
    out.append(
      f'| {r["workdir"]} | {r["world"]} | {r["specs"]} | {r["trunk"]} | '
      f'{e["mean_gap"]:+.2f} ({per_seed}) | '
      f'{"overlap" if e["ranges_overlap"] else "no overlap"} | {aft_only} | {base} | '
      f'{"; ".join(r["fails"]) or "met"} |'
    )
  met = sum(not r['fails'] for r in rows)
  out.append(
    f"\n{met} of {len(rows)} meet the bar. Rates are on spec A's value; "
    "baseline = the trunk's rate."
  )
  return '\n'.join(out)


def main(argv: list[str]) -> int:
  margin, workdirs = 0.2, []
  for a in argv:
    if a.startswith('--margin='):
      margin = float(a.split('=', 1)[1])
    elif a.startswith('-'):
      print(f'unknown option {a!r} (expected --margin=<float>)', file=sys.stderr)
      return 2
    else:
      workdirs.append(a)
  if not workdirs:
    print(__doc__, file=sys.stderr)
    return 2
  try:
    rows = [row(w, margin) for w in workdirs]
  except (FileNotFoundError, ValueError) as err:
    print(f'error: {err}', file=sys.stderr)
    return 2
  print(table(rows))
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
