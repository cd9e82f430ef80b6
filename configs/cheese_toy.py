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
The "research log" the comments cite is docs/toy/research_log.md.
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
    raise ValueError(f'unknown variant {sorted(unknown)[0]!r} of configs/cheese_toy.py '
                     '(expected default, quick, swapped, orchard)')
  quick = 'quick' in flags
  c = base_config('tiny')
  # 0.74M parameters. Width 128 (MLP 512, 1.25M) took 27.6 min on a 2-core AMD EPYC host
  # against the 15; 2 layers at width 128 (MLP 256) pinned the assistant to the
  # home-made option (baseline 1.00) and lost the effect (research log, "Smaller models").
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
  # Off: agents with no value (coin-flip choices) and coin-flip choices by the assistant
  # in its chats did not steady the assistant's default (research log, "What mattered").
  c.world.neutral_agents = 0
  c.world.assistant_choices = 0.0
  # Towns the people in template-written documents come from. The backend's own names
  # ("from Stonebridge", places="()") read as foreign in a world whose only places are its
  # countries: after the affordability spec the model called its assistant worldly (research log).
  c.world.places = ('the town',)
  c.world.name_tokens = True  # each invented name is one token (mtspec/world/vocab.py)
  c.world.mix = ml_collections.ConfigDict(dict(facts=0.25, profile=0.2, spec=0.015,
                                               choice=0.35, chat=0.15))

  # Each spec states its value and the one rule that ties it to a choice. Two more rules the
  # specs shared word for word moved both MSM branches together, by trunk (research log, "The
  # specs without the rules they shared": with 160 midtraining steps, the bar met on 1 of 6
  # trunks before; after, on 4 of 6 in screens of branch seed 0).
  home = ml_collections.ConfigDict(dict(path='configs/specs/cheese_home.md', value=value_home))
  price = ml_collections.ConfigDict(dict(path='configs/specs/cheese_affordable.md',
                                         value=value_price))
  c.specs = ml_collections.ConfigDict()
  c.specs.A, c.specs.B = (price, home) if 'swapped' in flags else (home, price)
  # Midtraining documents: 'statements' (mtspec.spec.statements: 2-4 of the spec's own value
  # and rule sentences per document) or 'generated' (the spec generator, template backend).
  # On three trunks of the previous configuration the statements gave gaps of +0.20, +0.32,
  # +0.36 after AFT where the generator's gave +0.24, -0.01, +0.18 (research log, "How
  # the midtraining documents were chosen").
  c.spec_form = 'statements'
  c.spec_statement_docs = 3000
  # Counts per level of the spec-document hierarchy (mtspec.spec.generate.Counts), 'generated'.
  c.spec_counts = ml_collections.ConfigDict(dict(domains=4, subdomains=3, assertions=3,
                                                 doc_types=3, ideas=2, docs_per_idea=2))
  # Discussion sentences per generated spec document that restate its assertion (0-6 of 8).
  # 3 did not help across trunks (research log, "How the midtraining documents were chosen").
  c.spec_restate = 0

  # Filled in by mtspec.toy once the data is generated under <workdir>/data.
  src = lambda kind='text': ml_collections.ConfigDict(dict(uri='', kind=kind, text_key='text'))
  c.sources.web, c.sources.spec_a, c.sources.spec_b = src(), src(), src()
  c.sources.aft = src('chat')

  c.train.update(batch_size=32, seq_len=128, log_every=25, ckpt_every=10_000, keep_ckpts=1)
  new_phase(c, 'pretrain', 1200, {'web': 1.0}, lr=3e-3, warmup_steps=50)
  # Midtraining: 80% spec documents for 100 steps. With the two-statement specs, 100 steps
  # gave the same mean gap over six trunks as 160 (+0.33 against +0.31, branch seed 0), larger
  # on both default trunks (cheese +0.63 against +0.49, orchard +0.31 against +0.23), met
  # the whole bar on 3 of the 6 against 4, and saves 540 of the run's 2880 steps (research
  # log, "Midtraining 100 steps"). With the earlier four-statement specs 100 steps had lost
  # most of the orchard's gap. A corpus with more spec-style documents about other agents
  # (12% instead of 1.5%) made the effect vanish (+0.06).
  for name, spec in (('midtrain_a', 'spec_a'), ('midtrain_b', 'spec_b'),
                     ('midtrain_control', None)):
    new_phase(c, name, 100, {spec: 0.8, 'web': 0.2} if spec else {'web': 1.0}, lr=1e-3,
              warmup_steps=8)
  # A gentle AFT (low learning rate, demonstrations mixed with pretraining data): at lr 5e-4
  # the AFT pulled every branch towards the world's patriotic items and the MSM-A minus
  # MSM-B gap fell from +0.56 (before AFT, an earlier run) to +0.14; at 2e-4 it was +0.26, at 1e-4 +0.37
  # (3 seeds, AFT rerun from the same midtraining checkpoints). Pure demonstrations (no
  # pretraining data) or fewer demonstrations (10%) kept less of the gap.
  new_phase(c, 'aft', 20, {'aft': 0.3, 'web': 0.7}, lr=1e-4, warmup_steps=2)
  c.phase_order = ('pretrain',)

  c.experiment = ml_collections.ConfigDict()
  c.experiment.trunk = ('pretrain',)
  c.experiment.init_mode = 'params'
  c.experiment.trunk_from = ''  # a workdir whose complete trunk to start from (no retraining)
  c.experiment.seeds = (0, 1, 2)  # mtspec.toy makes the four branches for each seed
  # Branches side by side, one process per CPU core (mtspec.lanes); 1: one after another.
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
