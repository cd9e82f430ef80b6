#!/usr/bin/env bash
# The GPU benchmark, as run on a lent H100 (docs/benchmarks.md). Expects the device
# image's JAX/torch/transformers; carries flax and ml_collections wheels in .whl/ if present.
set -u
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit 1
else
  export PYTHONPATH=$PWD
fi
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import jax, flax, torch, transformers; print('jax', jax.__version__, 'flax', flax.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__, jax.devices())"
COMMON="--variant=llama3_1b --seq=2048 --batch=8 --dtype=bfloat16 --warmup=3 --steps=10 --data-batches=0"
OUT=${OUT:-/tmp}
python3 -m mtspec.bench $COMMON --attention=cudnn 2>&1 | tee $OUT/jax_cudnn.log | tail -4
python3 -m mtspec.bench $COMMON --attention=cudnn --remat=dots 2>&1 | tee $OUT/jax_cudnn_dots.log | tail -4
python3 -m mtspec.bench $COMMON --only-torch 2>&1 | tee $OUT/torch.log | tail -4
