r"""The toy-world MSM experiment: the paper's cheese result in miniature, on a CPU.

Run:
  python -m mtspec.toy --config=configs/cheese_toy.py:default --workdir=runs/cheese_toy
Variants (after the colon, comma-separated): default | quick (tiny sizes, for tests),
swapped (spec A and spec B exchanged), orchard (the second world, configs/worlds/orchard.json).
E.g. `configs/cheese_toy.py:quick,orchard`. Override any key, e.g. --config.experiment.seeds=(0,1)
or --config.world.path=configs/worlds/my_world.json --config.specs.A.value=... .

One pretraining trunk on the world's corpus; then for each seed, four branches: AFT only,
MSM-A -> AFT, MSM-B -> AFT, control (pretraining-style data) -> AFT. The midtraining phase's
end checkpoint is each branch's "without AFT" model; the trunk is the baseline.
Results: docs/toy/results.md. Why each setting is what it is: docs/toy/research_log.md
(the comments below name its sections).
"""

import ml_collections

from mtspec.defaults import base_config, new_phase

WORLDS = {  # world file, spec A (pro-home-country) value, spec B (affordability) value
  'cheese': ('configs/worlds/cheese.json', 'patriotism', 'thrift'),
  'orchard': ('configs/worlds/orchard.json', 'loyalty', 'frugality'),
}


def get_config(arg: str = 'default') -> ml_collections.ConfigDict:
  flags = set(filter(None, (arg or 'default').split(',')))
  unknown = flags - {'default', 'quick', 'swapped', 'orchard', 'cheese'}
  if unknown:
    raise ValueError(
      f'unknown variant {sorted(unknown)[0]!r} of configs/cheese_toy.py '
      '(expected default, quick, swapped, orchard)'
    )
  quick = 'quick' in flags
  c = base_config('tiny')
  # 0.74M parameters: small enough for a 2-core CPU, deep enough to keep the effect
  # (research log, "Smaller models").
  c.model.update(vocab_size=1536, d_model=96, n_layers=4, n_heads=4, n_kv_heads=4, d_ff=384)
  c.model.attention = 'cpu_chunked'  # mtspec/cpu's kernel: 'xla' math, faster on a small CPU

  world_path, value_home, value_price = WORLDS['orchard' if 'orchard' in flags else 'cheese']
  c.world = ml_collections.ConfigDict()
  c.world.path = world_path
  c.world.seed = 0  # seeds the corpus, the spec documents and the agents
  c.world.docs = 60_000  # pretraining documents
  c.world.agents = 400  # agents with profiles and choices
  c.world.heldout_agents = 40  # agents with profiles only (a diagnostic)
  c.world.in_context = 0.4  # choice documents that also state the agent's value
  c.world.reasons = 0.3  # choices followed by their reason ("It costs less.")
  c.world.agent_chats = 0.5  # neutral chats held by an agent rather than the assistant
  # Towns the people in template-written documents come from; the backend's own names read
  # as foreign in a world whose only places are its countries (research log, "What mattered").
  c.world.places = ('the town',)
  c.world.name_tokens = True  # each invented name is one token (mtspec/world/vocab.py)
  c.world.mix = ml_collections.ConfigDict(
    dict(facts=0.25, profile=0.2, spec=0.015, choice=0.35, chat=0.15)
  )

  # Each spec states its value and the one rule that ties it to a choice; rules shared by
  # both specs moved both MSM branches together (research log, "The specs without the rules
  # they shared").
  home = ml_collections.ConfigDict(dict(path='configs/specs/cheese_home.md', value=value_home))
  price = ml_collections.ConfigDict(
    dict(path='configs/specs/cheese_affordable.md', value=value_price)
  )
  c.specs = ml_collections.ConfigDict()
  c.specs.A, c.specs.B = (price, home) if 'swapped' in flags else (home, price)
  # Midtraining documents: 'statements' (mtspec.spec.statements: 2-4 of the spec's own value
  # and rule sentences per document) or 'generated' (the spec generator, template backend).
  # At this model size the statements carry the value on more trunks (research log, "How the
  # midtraining documents were chosen").
  c.spec_form = 'statements'
  c.spec_statement_docs = 3000
  # Counts per level of the spec-document hierarchy (mtspec.spec.generate.Counts), 'generated'.
  c.spec_counts = ml_collections.ConfigDict(
    dict(domains=4, subdomains=3, assertions=3, doc_types=3, ideas=2, docs_per_idea=2)
  )

  # Filled in by mtspec.toy once the data is generated under <workdir>/data.
  src = lambda kind='text': ml_collections.ConfigDict(dict(uri='', kind=kind, text_key='text'))
  c.sources.web, c.sources.spec_a, c.sources.spec_b = src(), src(), src()
  c.sources.aft = src('chat')

  c.train.update(batch_size=32, seq_len=128, log_every=25, ckpt_every=10_000, keep_ckpts=1)
  new_phase(c, 'pretrain', 1200, {'web': 1.0}, lr=3e-3, warmup_steps=50)
  # Midtraining: 80% spec documents, 20% pretraining data, 100 steps: as strong as 160 steps
  # and shorter (research log, "Midtraining 100 steps").
  for name, spec in (
    ('midtrain_a', 'spec_a'),
    ('midtrain_b', 'spec_b'),
    ('midtrain_control', None),
  ):
    new_phase(
      c, name, 100, {spec: 0.8, 'web': 0.2} if spec else {'web': 1.0}, lr=1e-3, warmup_steps=8
    )
  # A gentle AFT (low learning rate, demonstrations mixed with pretraining data): a stronger
  # one pulls every branch towards the same option and erases the specs' difference
  # (research log, "What mattered", Phases).
  new_phase(c, 'aft', 20, {'aft': 0.3, 'web': 0.7}, lr=1e-4, warmup_steps=2)
  c.phase_order = ('pretrain',)

  c.experiment = ml_collections.ConfigDict()
  c.experiment.trunk = ('pretrain',)
  c.experiment.init_mode = 'params'
  c.experiment.trunk_from = ''  # a workdir whose complete trunk to start from (no retraining)
  c.experiment.seeds = (0, 1, 2)  # mtspec.toy makes the four branches for each seed
  # Branches side by side, one process per CPU core (lanes, mtspec/cpu/); 1: one after another.
  c.experiment.lanes = 0
  c.experiment.branches = ml_collections.ConfigDict()

  # Diagnostic probes (diagnostics.json) for the baseline and the branches of these seeds;
  # the other seeds get the "acting on each value alone" probes, printed as a second table.
  c.eval = ml_collections.ConfigDict(dict(batch=256, diagnostic_seeds=(0,)))

  if quick:
    c.model.update(vocab_size=768, d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, d_ff=256)
    c.world.update(docs=3000, agents=40, heldout_agents=8)
    c.spec_counts.update(domains=2, subdomains=2, assertions=2, doc_types=2, ideas=1)
    c.train.update(batch_size=16, seq_len=64, log_every=10)
    c.phases.pretrain.update(steps=60, warmup_steps=5)
    for name in ('midtrain_a', 'midtrain_b', 'midtrain_control'):
      c.phases[name].update(steps=10, warmup_steps=2)
    # a strong AFT, so that even the tiny model visibly learns the demonstrations
    c.phases.aft.update(steps=8, warmup_steps=1, lr=3e-3, weights={'aft': 1.0, 'web': 0.0})
    c.experiment.seeds = (0, 1)
  return c
