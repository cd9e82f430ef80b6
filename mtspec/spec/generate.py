"""The hierarchical generation pipeline, as in the MSM paper:

  spec -> domains -> subdomains (each keeping the spec text it covers) -> assertions with
  explanations -> document types -> document ideas -> documents

plus, from the same spec, AFT demonstrations (chat, with a strippable reasoning part) and
held-out eval items (pairwise choices with the value-aligned option marked).

Every task's result is appended to `<out>/cache/levels.jsonl` the moment it finishes, keyed
by the task (level, inputs, count, seed), backend, model and prompt version. A re-run after
a kill skips what is cached; the sets are written whole from the cache at the end, each
item under an id that is its path in the hierarchy, so nothing is repeated or duplicated.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from tqdm import tqdm

from mtspec import paths
from mtspec.spec import contamination, dedup, prompts, sets
from mtspec.spec.backends.base import Backend, Task
from mtspec.spec.cache import KeyedJsonl
from mtspec.spec.parse import Spec, render


@dataclasses.dataclass(frozen=True)
class Counts:
  """How many items each level asks for, per parent item."""

  domains: int = 4
  subdomains: int = 3
  assertions: int = 3
  doc_types: int = 3
  ideas: int = 2
  docs_per_idea: int = 1
  aft: int = 48  # total AFT conversations
  eval: int = 48  # total held-out eval items

  def documents(self) -> int:
    return (
      self.domains
      * self.subdomains
      * self.assertions
      * self.doc_types
      * self.ideas
      * self.docs_per_idea
    )


@dataclasses.dataclass(frozen=True)
class Options:
  seed: int = 0
  dedup_threshold: float = 0.5  # Jaccard of word 5-gram shingles
  reasoning: str = 'keep'  # keep: "reasoning" key; inline: in the turn; drop: none
  contamination_n: int = 8


def _seed(seed: int, path: str) -> int:
  return int.from_bytes(hashlib.sha256(f'{seed}/{path}'.encode()).digest()[:8], 'big')


class Pipeline:
  def __init__(
    self,
    spec: Spec,
    out_dir: str | Path,
    backend: Backend,
    counts: Counts = Counts(),
    options: Options = Options(),
  ):
    if options.reasoning not in ('keep', 'inline', 'drop'):
      raise ValueError(f'reasoning must be keep, inline or drop, not {options.reasoning!r}')
    self.spec, self.out, self.backend = spec, str(out_dir), backend
    self.counts, self.opts = counts, options
    self.cache = KeyedJsonl(paths.join(self.out, 'cache', 'levels.jsonl'))
    self.base = {'spec_name': spec.name, 'assistant': spec.assistant}

  def _cache_key(self, task: Task) -> str:
    tag = f'{task.key}|{self.backend.name}|{self.backend.model}|{prompts.VERSIONS[task.level]}'
    return hashlib.sha256(tag.encode()).hexdigest()

  def level(self, name: str, jobs: list[tuple[str, dict, int]]) -> list:
    """Run (path, inputs, n) jobs at one level, cached; results in job order."""
    tasks = [
      Task(name, {**self.base, **inp}, n, _seed(self.opts.seed, path)) for path, inp, n in jobs
    ]
    keys = {t.key: self._cache_key(t) for t in tasks}
    todo = list({t.key: t for t in tasks if keys[t.key] not in self.cache}.values())
    with tqdm(
      total=len(keys), initial=len(keys) - len(todo), desc=name, disable=None, leave=False
    ) as bar:
      for t, result in self.backend.run_many(todo):
        self.cache.put(keys[t.key], level=name, result=result)
        bar.update()
    return [self.cache.get(keys[t.key])['result'] for t in tasks]

  def hierarchy(self) -> list[dict]:
    """Document records, one per (domain, subdomain, assertion, doc type, idea, variant)."""
    spec, c, units = self.spec, self.counts, self.spec.units()
    with_units = {u['section'] for u in units}
    sections = [
      {'id': s.id, 'title': s.title, 'has_units': s.id in with_units} for s in spec.sections
    ]
    domains = self.level(
      'domains',
      [
        (
          'd',
          {
            'spec_text': render(spec),
            'sections': sections,
            'section_ids': [s['id'] for s in sections if s['has_units']],
          },
          c.domains,
        )
      ],
    )[0]

    jobs = []
    for i, d in enumerate(domains):
      d = dict(d, spec_text='\n\n'.join(spec.section_text(s) for s in d['section_ids']))
      d_units = [u for u in units if u['section'] in d['section_ids']] or units
      jobs.append((f'd{i}', {'domain': d, 'units': d_units}, c.subdomains))
    subs = self.level('subdomains', jobs)

    jobs = [
      (f'{p}s{j}', {'domain': inp['domain']['title'], 'subdomain': s}, c.assertions)
      for (p, inp, _), ss in zip(jobs, subs)
      for j, s in enumerate(ss)
    ]
    assertions = self.level('assertions', jobs)

    jobs = [
      (
        f'{p}a{k}',
        {'assertion': a, 'topic': inp['subdomain']['title'], 'domain': inp['domain']},
        c.doc_types,
      )
      for (p, inp, _), aa in zip(jobs, assertions)
      for k, a in enumerate(aa)
    ]
    doc_types = self.level('doc_types', jobs)

    jobs = [
      (f'{p}t{m}', dict(inp, doc_type=t), c.ideas)
      for (p, inp, _), tt in zip(jobs, doc_types)
      for m, t in enumerate(tt)
    ]
    ideas = self.level('ideas', jobs)

    jobs = [
      (f'{p}i{q}k{v}', dict(inp, idea=idea, variant=v), 1)
      for (p, inp, _), ii in zip(jobs, ideas)
      for q, idea in enumerate(ii)
      for v in range(c.docs_per_idea)
    ]
    docs = self.level('documents', jobs)
    return [
      {
        'id': p,
        'text': doc['text'],
        'doc_type': inp['doc_type'],
        'domain': inp['domain'],
        'subdomain': inp['topic'],
        'assertion': inp['assertion']['statement'],
      }
      for (p, inp, _), doc in zip(jobs, docs)
    ]

  def _unit_jobs(self, prefix: str, count: int) -> list[tuple[str, dict, int]]:
    units = self.spec.units()
    # round: how many times this unit came up before, so repeats can be told to differ
    return [
      (
        f'{prefix}{i}',
        {
          'unit': u,
          'index': i,
          'round': i // len(units),
          'spec_text': self.spec.section_text(u['section']),
        },
        1,
      )
      for i in range(count)
      for u in [units[i % len(units)]]
    ]

  def aft(self) -> list[dict]:
    jobs = self._unit_jobs('aft', self.counts.aft)
    out = []
    for (p, inp, _), conv in zip(jobs, self.level('aft', jobs)):
      rec = {'id': p, 'unit': inp['unit']['id'], 'messages': conv['messages']}
      if self.opts.reasoning == 'keep':
        rec['reasoning'] = conv['reasoning']
      elif self.opts.reasoning == 'inline' and conv['reasoning']:
        first = next(k for k, m in enumerate(rec['messages']) if m['role'] == 'assistant')
        msg = rec['messages'][first]
        rec['messages'][first] = dict(
          msg, content=f'<reasoning>{conv["reasoning"]}</reasoning>\n{msg["content"]}'
        )
      out.append(rec)
    return out

  def eval(self) -> list[dict]:
    jobs = self._unit_jobs('eval', self.counts.eval)
    out = []
    for (p, inp, _), item in zip(jobs, self.level('eval', jobs)):
      aligned = _seed(self.opts.seed, p + '/position') % 2  # no position bias
      opts = [item['aligned_option'], item['other_option']][:: 1 - 2 * aligned]
      u = inp['unit']
      out.append(
        {
          'id': p,
          'prompt': item['prompt'],
          'options': opts,
          'aligned': aligned,
          'value': u['text'],
          'section': u['section'],
        }
      )
    return out

  def _dedup(self, records: list[dict]) -> tuple[list[dict], int]:
    keep, dropped = dedup.filter_near_duplicates(
      [sets.record_text(r) for r in records], self.opts.dedup_threshold
    )
    return [records[i] for i in keep], len(dropped)

  def run(self) -> dict:
    """Generate (or resume), write every set and the manifest; return the manifest."""
    paths.remove(paths.join(self.out, sets.MANIFEST))  # present again only when complete
    built = {
      'documents': ('text', self.hierarchy()),
      'aft': ('chat', self.aft()),
      'eval': ('eval', self.eval()),
    }
    manifest_sets = {}
    for name, (kind, records) in built.items():
      kept, dropped = self._dedup(records)
      built[name] = (kind, kept)
      entry = sets.write_set(self.out, name, kind, kept)
      manifest_sets[name] = dict(entry, generated=len(records), dropped_near_duplicates=dropped)
    report = contamination.overlap_report(
      built['eval'][1], {k: built[k][1] for k in ('documents', 'aft')}, self.opts.contamination_n
    )
    manifest = {
      'spec': self.spec.provenance(),
      **self.backend.describe(),
      'seed': self.opts.seed,
      'counts': dataclasses.asdict(self.counts),
      'prompt_versions': dict(prompts.VERSIONS),
      'dedup': {
        'method': 'minhash-lsh+exact-jaccard',
        'shingle_words': 5,
        'threshold': self.opts.dedup_threshold,
      },
      'reasoning': self.opts.reasoning,
      'sets': manifest_sets,
      # totals over the request cache; this run's counters would make re-runs differ
      'usage': {k: v for k, v in self.backend.usage().items() if k != 'this_run'},
      'contamination': report,
    }
    sets.write_manifest(self.out, manifest)
    self.cache.close()
    return manifest


def generate(
  spec: Spec,
  out_dir: str | Path,
  backend: Backend,
  counts: Counts = Counts(),
  options: Options = Options(),
) -> dict:
  return Pipeline(spec, out_dir, backend, counts, options).run()
