"""Every data set of a toy-world experiment, generated under <workdir>/data:

  mtspec_world/<config>/   the pretraining corpus (TFDS, ArrayRecord), read via tfds.data_source
  spec_a/, spec_b/         midtraining documents for each spec, with the world's names filled
                           into the spec's {{placeholders}}: `mtspec.spec generate` output
                           (template backend) or the spec's own statements (config.spec_form)
  world/aft/, world/eval/  AFT demonstrations (chat) and held-out pairs (eval), manifest.json
                           with the contamination report of the eval set against every
                           training set that the midtraining and AFT phases read

Deterministic for the config; a re-run reuses the corpus and the spec caches.
"""

from __future__ import annotations

import dataclasses

from mtspec import paths
from mtspec.spec import sets, statements
from mtspec.spec.backends.template import PLACES, TemplateBackend
from mtspec.spec.generate import Counts, Options, generate
from mtspec.spec.parse import parse_file
from mtspec.world import corpus, demos, evalset, schema, tfds_world, vocab


def corpus_sizes(cfg) -> corpus.CorpusSizes:
  w = cfg.world
  return corpus.CorpusSizes(
    docs=int(w.docs),
    agents=int(w.agents),
    heldout_agents=int(w.heldout_agents),
    in_context=float(w.in_context),
    reasons=float(w.reasons),
    agent_chats=float(w.agent_chats),
    places=tuple(w.places),
    mix=tuple(sorted((k, float(v)) for k, v in w.mix.items())),
  )


def spec_set(
  world,
  path: str,
  out: str,
  counts,
  seed: int,
  places=(),
  form: str = 'generated',
  statement_docs: int = 0,
) -> dict:
  """Midtraining documents for one spec, tied to the world by its placeholders: the spec
  generator's (template backend), or documents of the spec's own statements."""
  spec = parse_file(path, world.spec_fill())
  if form == 'statements':
    return statements.write(spec, out, statement_docs, seed)
  if form != 'generated':
    raise ValueError(f"config.spec_form={form!r}: expected 'generated' or 'statements'")
  c = Counts(**{k: int(v) for k, v in counts.items()}, aft=4, eval=4)  # only documents train
  return generate(spec, out, TemplateBackend(places or PLACES), c, Options(seed=seed))


def build(cfg, data_dir: str) -> dict:
  """Writes every set; returns {'world', 'agents', 'uris': {source: uri}, 'eval', 'aft',
  'manifest'}. Raises ContaminationError when a held-out item reaches a training set."""
  world = schema.load(cfg.world.path)
  va, vb = cfg.specs.A.value, cfg.specs.B.value
  schema.check_values(world, va, vb)
  sizes, seed = corpus_sizes(cfg), int(cfg.world.seed)
  paths.makedirs(data_dir)
  uris = {'web': tfds_world.prepare(world, data_dir, sizes, seed)}
  spec_manifests, docs = {}, {}
  for key in ('A', 'B'):
    out = paths.join(data_dir, f'spec_{key.lower()}')
    spec_manifests[key] = spec_set(
      world,
      cfg.specs[key].path,
      out,
      cfg.spec_counts,
      seed,
      sizes.places,
      cfg.get('spec_form', 'generated'),
      int(cfg.get('spec_statement_docs', 0)),
    )
    uris[f'spec_{key.lower()}'] = f'arrayrecord:{paths.join(out, "documents")}'
    docs[key] = sets.load_records(paths.join(out, spec_manifests[key]['sets']['documents']['path']))
  aft = demos.records(world, va, vb)
  ev = evalset.records(world, va, vb)
  report = evalset.check_clean(
    world, ev, {'spec_a/documents': docs['A'], 'spec_b/documents': docs['B'], 'world/aft': aft}
  )
  wdir = paths.join(data_dir, 'world')
  manifest = {
    'world': {'path': world.path, 'name': world.name, 'sha256': world.sha256},
    'corpus': {'uri': uris['web'], 'seed': seed, **dataclasses.asdict(sizes)},
    'values': {'A': va, 'B': vb},
    'specs': {
      k: {
        'path': cfg.specs[k].path,
        'sha256': m['spec']['sha256'],
        'documents': m['sets']['documents']['count'],
        'tokens': m['sets']['documents']['tokens'],
      }
      for k, m in spec_manifests.items()
    },
    'sets': {
      'aft': sets.write_set(wdir, 'aft', 'chat', aft),
      'eval': sets.write_set(wdir, 'eval', 'eval', ev),
    },
    'contamination': report,
  }
  sets.write_manifest(wdir, manifest)
  uris['aft'] = f'arrayrecord:{paths.join(wdir, "aft")}'
  agents = corpus.make_agents(world, sizes, seed)
  tokenizer = ''
  if cfg.world.name_tokens:  # one token per name; else the trainer trains plain BPE
    tokenizer = paths.join(data_dir, f'tokenizer_{uris["web"].split("/")[-1]}.model')
    texts = (d['text'] for _, d in corpus.generate(world, sizes, seed))
    vocab.train(world, agents, texts, aft, int(cfg.model.vocab_size), tokenizer)
  return {
    'world': world,
    'agents': agents,
    'uris': uris,
    'eval': ev,
    'aft': aft,
    'manifest': manifest,
    'tokenizer': tokenizer,
  }
