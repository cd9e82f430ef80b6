r"""Language-model training on the built-in corpus (the foundation job), one phase.

Run:
  python -m mtspec.main --config=configs/lm.py:small --workdir=runs/lm_small
Variants (after the colon): tiny (tests), small (CPU benchmark shape, ~10.2M params),
llama3_1b, llama3_8b and qwen3_32b (full-size shapes of the published models).
Override any key: --config.phases.train.steps=100 --config.mesh.shape="(1,-1,1)"
Other configs build on `base_config` (model, mesh, data, train, init) and add sources/phases.
"""

import ml_collections

from mtspec.defaults import base_config, new_phase


def get_config(variant: str = 'small') -> ml_collections.ConfigDict:
  c = base_config(variant)
  c.sources.web = ml_collections.ConfigDict(dict(uri='builtin', kind='text', text_key='text'))
  new_phase(c, 'train', steps=120, weights={'web': 1.0}, lr=3e-3, warmup_steps=12)
  c.phase_order = ('train',)
  if variant == 'tiny':
    c.sources.web.uri = 'builtin:2000'
    c.phases.train.update(steps=40, warmup_steps=5)
    c.train.update(batch_size=8, seq_len=64, log_every=5, ckpt_every=20)
  return c
