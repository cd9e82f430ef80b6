r"""MSM on Llama-3.1-8B: midtrain on spec documents, then AFT, from Hugging Face weights.

Run (on every worker of a TPU slice, see scripts/tpu_vm.sh; or on an 8-GPU host):
  python -m mtspec.main --config=configs/msm_llama3_8b.py:v5p-8 --workdir=gs://BUCKET/runs/l8b \
    --config.init.hf_model=/path/to/Llama-3.1-8B \
    --config.sources.spec_docs.uri=arrayrecord:gs://BUCKET/spec/documents \
    --config.sources.aft.uri=arrayrecord:gs://BUCKET/spec/aft \
    --config.data.tfds_data_dir=gs://BUCKET/tfds
Variants = targets (chips, per-chip memory): v5e-16 (16 x 16 GiB, seq 4096),
v5p-8 (4 chips x 95 GiB, seq 8192), h100x8 (8 x 80 GiB, seq 8192).
As in the paper, LoRA (rank 64, alpha 128, every attention and MLP projection; lr 1e-4,
cosine, 5% warmup) over a frozen bf16 base, the same adapter continuing from midtraining into
AFT. Add `-full` to a variant (e.g. v5p-8-full) for full fine-tuning with float32 master
weights and AdamW state. bf16 compute and full remat either way.
"""
import ml_collections

from configs.lm import base_config
from mtspec.phases import new_phase

TARGETS = {  # variant: (devices, GiB per device, mesh, seq_len, batch, grad_accum)
    'v5e-16': (16, 16, (1, 16, 1), 4096, 64, 4),
    'v5p-8': (4, 95, (1, 4, 1), 8192, 16, 4),
    'h100x8': (8, 80, (1, 8, 1), 8192, 32, 4),
}


def msm_config(model_variant: str, target: tuple, full: bool = False) -> ml_collections.ConfigDict:
  _, _, mesh, seq, batch, accum = target
  c = base_config(model_variant)
  c.model.update(remat='full', dtype='bfloat16',
                 param_dtype='float32' if full else 'bfloat16')  # a frozen base needs no f32
  if not full:
    c.lora.update(rank=64, alpha=128.0)
  c.mesh.shape = mesh
  src = lambda uri, kind='text': ml_collections.ConfigDict(dict(uri=uri, kind=kind,
                                                                text_key='text'))
  c.sources.web = src('tfds:c4/en:3.1.0')
  c.sources.spec_docs = src('arrayrecord:SET_ME/documents')
  c.sources.aft = src('arrayrecord:SET_ME/aft', kind='chat')
  # The paper: spec documents as plain text (web mixed in protects other skills), then AFT;
  # lr 1e-4 for LoRA (full fine-tuning takes a smaller rate), cosine, 5% warmup.
  lr = 1e-5 if full else 1e-4
  new_phase(c, 'midtrain', 400, {'spec_docs': 0.9, 'web': 0.1}, lr=lr, warmup_steps=20)
  new_phase(c, 'posttrain', 100, {'aft': 1.0}, lr=lr, warmup_steps=5)
  c.phase_order = ('midtrain', 'posttrain')
  c.train.update(seq_len=seq, batch_size=batch, grad_accum=accum, log_every=10,
                 ckpt_every=100, keep_ckpts=2)
  c.init.hf_model = 'SET_ME'
  return c


def get_config(variant: str = 'v5p-8') -> ml_collections.ConfigDict:
  target, full = variant.removesuffix('-full'), variant.endswith('-full')
  if target not in TARGETS:
    raise ValueError(f'unknown variant {variant!r} (expected one of {sorted(TARGETS)}, '
                     'optionally with -full)')
  return msm_config('llama3_8b', TARGETS[target], full)
