"""results.json, the printed table (condition x value-aligned rate over seeds) and a PNG chart.

results.json:
  {"conditions": [{"name", "midtrain": "A"|"B"|"control"|null, "aft": bool, "seed",
                   "rates": {value: fraction of held-out pairs choosing its option}, "n_pairs"}],
   "world": path, "specs": {"A": {"path", "value"}, "B": {"path", "value"}}}
"""

from __future__ import annotations

import io
import os

import numpy as np

from mtspec import paths

ORDER = (
  'baseline',
  'AFT only',
  'control',
  'control+AFT',
  'MSM-A',
  'MSM-A+AFT',
  'MSM-B',
  'MSM-B+AFT',
)


def condition_name(midtrain, aft: bool) -> str:
  base = {
    None: 'baseline' if not aft else 'AFT only',
    'control': 'control',
    'A': 'MSM-A',
    'B': 'MSM-B',
  }[midtrain]
  return base + ('+AFT' if aft and midtrain else '')


def write_results(path: str, results: dict) -> None:
  paths.write_json(path, results, indent=2)


def by_condition(results: dict) -> dict:
  """{condition name: {value: [rate per seed, in seed order]}}, in ORDER."""
  values = [results['specs'][k]['value'] for k in ('A', 'B')]
  groups = {}
  for c in sorted(results['conditions'], key=lambda c: c['seed']):
    g = groups.setdefault(c['name'], {v: [] for v in values} | {'seeds': []})
    for v in values:
      g[v].append(c['rates'][v])
    g['seeds'].append(c['seed'])
  return {n: groups[n] for n in ORDER if n in groups}


def stats(xs) -> str:
  xs = np.asarray(xs)
  if len(xs) == 1:
    return f'{xs[0]:.2f}'
  return f'{xs.mean():.2f} [{xs.min():.2f}, {xs.max():.2f}]'


def effect(results: dict) -> dict:
  """The claims of the experiment, on value A's rate: MSM-A+AFT minus MSM-B+AFT (mean and
  per seed, paired), whether the two seed ranges overlap, and whether AFT-only lies between."""
  g = by_condition(results)
  va = results['specs']['A']['value']
  if not {'MSM-A+AFT', 'MSM-B+AFT'} <= set(g):
    return {}
  a, b = np.asarray(g['MSM-A+AFT'][va]), np.asarray(g['MSM-B+AFT'][va])
  out = {
    'value': va,
    'mean_gap': float(a.mean() - b.mean()),
    'paired_gaps': [float(x) for x in a - b] if len(a) == len(b) else [],
    'ranges_overlap': bool(a.min() <= b.max()),
    'msm_a_aft': [float(x) for x in a],
    'msm_b_aft': [float(x) for x in b],
  }
  if 'AFT only' in g:
    m = float(np.mean(g['AFT only'][va]))
    out['aft_only_mean'] = m
    out['aft_only_between'] = bool(b.mean() < m < a.mean())
  if {'MSM-A', 'MSM-B'} <= set(g):
    out['mean_gap_without_aft'] = float(np.mean(g['MSM-A'][va]) - np.mean(g['MSM-B'][va]))
  return out


def table(results: dict) -> str:
  """A markdown table: condition x rate of choosing each value's option, mean [min, max]."""
  va, vb = (results['specs'][k]['value'] for k in ('A', 'B'))
  n_pairs = results['conditions'][0]['n_pairs'] if results['conditions'] else 0
  rows = [f'| condition | seeds | {va} (spec A) rate | {vb} (spec B) rate |', '|---|---|---|---|']
  for name, g in by_condition(results).items():
    rows.append(f'| {name} | {len(g["seeds"])} | {stats(g[va])} | {stats(g[vb])} |')
  e = effect(results)
  lines = rows + [
    f'\n{n_pairs} held-out pairs per model (both orders); rate = fraction '
    "choosing that value's option; mean [min, max] over seeds."
  ]
  if e:
    lines.append(
      f'MSM-A+AFT minus MSM-B+AFT on {e["value"]}: {e["mean_gap"]:+.2f} '
      f'(per seed {", ".join(f"{x:+.2f}" for x in e["paired_gaps"])}); seed ranges '
      f'{"overlap" if e["ranges_overlap"] else "do not overlap"}'
      + (
        f'; AFT only ({e["aft_only_mean"]:.2f}) '
        f'{"lies" if e["aft_only_between"] else "does NOT lie"} between them'
        if 'aft_only_mean' in e
        else ''
      )
      + '.'
    )
  return '\n'.join(lines)


def chart(results: dict, path: str, title: str = '') -> None:
  """Grouped bars per condition: the mean rate of each value, min-max whiskers, seed dots."""
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  va, vb = (results['specs'][k]['value'] for k in ('A', 'B'))
  g = by_condition(results)
  names = list(g)
  x = np.arange(len(names))
  fig, ax = plt.subplots(figsize=(1.1 * len(names) + 2, 4))
  for off, v, colour in ((-0.2, va, '#c0392b'), (0.2, vb, '#2874a6')):
    means = [np.mean(g[n][v]) for n in names]
    lo = [means[i] - min(g[n][v]) for i, n in enumerate(names)]
    hi = [max(g[n][v]) - means[i] for i, n in enumerate(names)]
    ax.bar(
      x + off,
      means,
      0.4,
      yerr=[lo, hi],
      capsize=3,
      color=colour,
      alpha=0.8,
      label=f'{v} option chosen',
    )
    for i, n in enumerate(names):
      ax.scatter([x[i] + off] * len(g[n][v]), g[n][v], s=9, color='k', zorder=3)
  ax.axhline(0.5, color='grey', lw=0.8, ls=':')
  ax.set_xticks(x, names, rotation=25, ha='right')
  ax.set_ylim(0, 1)
  ax.set_ylabel('rate on held-out pairs')
  ax.set_title(title or f'{os.path.basename(results["world"])}: spec A = {va}, spec B = {vb}')
  ax.legend(fontsize=8, loc='upper left')
  fig.tight_layout()
  png = io.BytesIO()  # matplotlib writes local files only: through bytes to any path
  fig.savefig(png, format='png', dpi=120)
  plt.close(fig)
  paths.write_bytes(path, png.getvalue())


def own_table(diagnostics: list, values) -> str:
  """A markdown table: condition x how often the assistant acts on each value alone (pairs
  that differ only in that value's attribute), from diagnostics.json's models."""
  groups = {}
  for m in sorted(diagnostics, key=lambda m: m['seed']):
    if all(f'own_{v}' in m['rates'] for v in values):
      g = groups.setdefault(m['name'], {v: [] for v in values})
      for v in values:
        g[v].append(m['rates'][f'own_{v}'])
  if not groups:
    return ''
  rows = [
    '| condition | seeds | ' + ' | '.join(f'{v} alone' for v in values) + ' |',
    '|---|---|' + '---|' * len(values),
  ]
  for name in (n for n in ORDER if n in groups):
    g = groups[name]
    rows.append(
      f'| {name} | {len(g[values[0]])} | ' + ' | '.join(stats(g[v]) for v in values) + ' |'
    )
  return '\n'.join(
    rows
    + [
      "\nEach value alone: held-out pairs that differ only in that value's attribute (the "
      "other equal); rate = fraction choosing the value's option; 0.5 = no preference."
    ]
  )
