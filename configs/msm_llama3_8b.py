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

from mtspec.defaults import msm_config

TARGETS = {  # variant: (devices, GiB per device, mesh, seq_len, batch, grad_accum)
  'v5e-16': (16, 16, (1, 16, 1), 4096, 64, 4),
  'v5p-8': (4, 95, (1, 4, 1), 8192, 16, 4),
  'h100x8': (8, 80, (1, 8, 1), 8192, 32, 4),
}


def get_config(variant: str = 'v5p-8') -> ml_collections.ConfigDict:
  target, full = variant.removesuffix('-full'), variant.endswith('-full')
  if target not in TARGETS:
    raise ValueError(
      f'unknown variant {variant!r} (expected one of {sorted(TARGETS)}, optionally with -full)'
    )
  return msm_config('llama3_8b', TARGETS[target], full)
