r"""A two-phase tiny plan for the kill-and-resume test.

python -m mtspec.main --config=tests/configs/two_phase.py --workdir=/tmp/two_phase
"""

import ml_collections

from mtspec.defaults import base_config, new_phase


def get_config(arg=None):
  del arg
  c = base_config('tiny')
  src = lambda uri: ml_collections.ConfigDict(dict(uri=uri, kind='text', text_key='text'))
  c.sources.web = src('builtin:2000')
  c.sources.spec = src('builtin:300')
  new_phase(c, 'pretrain', 14, {'web': 1.0}, lr=3e-3, warmup_steps=2)
  new_phase(c, 'midtrain', 14, {'web': 0.5, 'spec': 0.5}, lr=1e-3, warmup_steps=2)
  c.phase_order = ('pretrain', 'midtrain')
  c.train.update(batch_size=8, seq_len=64, log_every=2, ckpt_every=4, keep_ckpts=2)
  return c
