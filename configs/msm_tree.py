r"""An MSM experiment tree: pretrain once, then branch (midtrain on spec A / spec B / control /
none), each followed by the same post-training phase.

Run:
  python -m mtspec.main --config=configs/msm_tree.py:tiny --workdir=runs/tree \
    --config.sources.spec_a.uri=arrayrecord:<set dir> --config.sources.spec_b.uri=... \
    --config.sources.aft.uri=arrayrecord:<chat set dir>
Spec sets come from `python -m mtspec.spec generate`. Variants: tiny, small.
"""

import ml_collections

from mtspec.defaults import base_config, new_phase


def get_config(variant: str = 'tiny') -> ml_collections.ConfigDict:
  c = base_config(variant)
  src = lambda uri, kind='text': ml_collections.ConfigDict(
    dict(uri=uri, kind=kind, text_key='text')
  )
  c.sources.web = src('builtin:2000' if variant == 'tiny' else 'builtin')
  c.sources.spec_a = src('jsonl:spec_a.jsonl')
  c.sources.spec_b = src('jsonl:spec_b.jsonl')
  c.sources.aft = src('jsonl:aft.jsonl', kind='chat')
  scale = 1 if variant == 'tiny' else 10
  new_phase(c, 'pretrain', 20 * scale, {'web': 1.0}, lr=3e-3, warmup_steps=2 * scale)
  new_phase(c, 'midtrain_a', 10 * scale, {'spec_a': 0.5, 'web': 0.5}, lr=1e-3)
  new_phase(c, 'midtrain_b', 10 * scale, {'spec_b': 0.5, 'web': 0.5}, lr=1e-3)
  new_phase(c, 'midtrain_control', 10 * scale, {'web': 1.0}, lr=1e-3)
  new_phase(c, 'posttrain', 6 * scale, {'aft': 0.9, 'web': 0.1}, lr=5e-4)
  c.phase_order = ('pretrain',)
  c.experiment = ml_collections.ConfigDict()
  c.experiment.trunk = ('pretrain',)
  c.experiment.init_mode = 'params'
  c.experiment.trunk_from = ''  # a workdir whose complete trunk to start from (no retraining)
  c.experiment.lanes = 0  # branches side by side, one process per CPU core (lanes, mtspec/cpu/)
  c.experiment.branches = ml_collections.ConfigDict(
    {
      'msm_a': dict(phases=('midtrain_a', 'posttrain'), seed=0),
      'msm_b': dict(phases=('midtrain_b', 'posttrain'), seed=0),
      'control': dict(phases=('midtrain_control', 'posttrain'), seed=0),
      'aft_only': dict(phases=('posttrain',), seed=0),
    }
  )
  if variant == 'tiny':
    c.train.update(batch_size=8, seq_len=64, log_every=5, ckpt_every=5)
  return c
