r"""MSM on Qwen3-32B: midtrain on spec documents, then AFT, from Hugging Face weights.

Run on every worker of the slice (scripts/tpu_vm.sh), as for configs/msm_llama3_8b.py:
  python -m mtspec.main --config=configs/msm_qwen3_32b.py:v5p-32 --workdir=gs://BUCKET/runs/q32b \
    --config.init.hf_model=/path/to/Qwen3-32B --config.sources.spec_docs.uri=... \
    --config.sources.aft.uri=... --config.data.tfds_data_dir=gs://BUCKET/tfds
Variants = targets: v5p-32 (16 chips x 95 GiB, seq 8192), h100x16 (two 8-GPU hosts x 80 GiB,
seq 4096), v5e-64 (64 x 16 GiB, seq 4096). LoRA as in the paper; add `-full` for full
fine-tuning (see configs/msm_llama3_8b.py).
"""

from mtspec.defaults import msm_config

TARGETS = {  # variant: (devices, GiB per device, mesh, seq_len, batch, grad_accum)
  'v5p-32': (16, 95, (1, 16, 1), 8192, 32, 2),
  'h100x16': (16, 80, (1, 16, 1), 4096, 64, 4),
  'v5e-64': (64, 16, (1, 32, 2), 4096, 128, 4),
}


def get_config(variant: str = 'v5p-32'):
  target, full = variant.removesuffix('-full'), variant.endswith('-full')
  if target not in TARGETS:
    raise ValueError(
      f'unknown variant {variant!r} (expected one of {sorted(TARGETS)}, optionally with -full)'
    )
  return msm_config('qwen3_32b', TARGETS[target], full)
