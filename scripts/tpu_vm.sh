#!/usr/bin/env bash
# Cloud TPU VM jobs: create a slice, put the code on every worker, run the same command on all.
#
#   export TPU=mtspec-v5p8 ZONE=us-east5-a TYPE=v5p-8 VERSION=v2-alpha-tpuv5 BUCKET=gs://my-bucket
#   bash scripts/tpu_vm.sh create          # the slice (queued resource: add QUEUED=1)
#   bash scripts/tpu_vm.sh setup           # clone/copy the code and install on every worker
#   bash scripts/tpu_vm.sh run --config=configs/msm_llama3_8b.py:v5p-8 \
#        --workdir=$BUCKET/runs/llama8b     # the same command on all workers
#   bash scripts/tpu_vm.sh ssh             # a shell on worker 0
#   bash scripts/tpu_vm.sh delete
#
# Workdirs and TFDS data live on GCS (orbax and tfds read gs:// paths); every worker runs
# `python -m mtspec.main`, jax.distributed finds its peers from the TPU environment, each
# process reads its own data shards, and only process 0 logs.
set -euo pipefail
: "${TPU:?set TPU (the VM name)}" "${ZONE:?set ZONE}"
TYPE=${TYPE:-v5p-8}
VERSION=${VERSION:-v2-alpha-tpuv5}
REPO=${REPO:-}  # a git URL to clone; empty = copy this checkout with scp
ssh_all() { gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all --command="$1"; }

case "${1:-}" in
  create)
    if [ -n "${QUEUED:-}" ]; then
      gcloud compute tpus queued-resources create "$TPU-qr" --node-id="$TPU" --zone="$ZONE" \
        --accelerator-type="$TYPE" --runtime-version="$VERSION"
    else
      gcloud compute tpus tpu-vm create "$TPU" --zone="$ZONE" --accelerator-type="$TYPE" \
        --version="$VERSION"
    fi ;;
  setup)
    if [ -n "$REPO" ]; then
      ssh_all "rm -rf mtspec && git clone $REPO mtspec"
    else
      tar czf /tmp/mtspec_code.tgz --exclude=.venv --exclude=runs --exclude=.git .
      gcloud compute tpus tpu-vm scp /tmp/mtspec_code.tgz "$TPU":~ --zone="$ZONE" --worker=all
      ssh_all "rm -rf mtspec && mkdir mtspec && tar xzf mtspec_code.tgz -C mtspec"
    fi
    ssh_all "cd mtspec && python3 -m venv .venv && .venv/bin/pip install -q -U pip && \
      .venv/bin/pip install -q -e '.[tpu,hf]' gcsfs" ;;
  run)
    shift
    ssh_all "cd mtspec && .venv/bin/python -m mtspec.main $*" ;;
  ssh) gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=0 ;;
  delete)
    gcloud compute tpus tpu-vm delete "$TPU" --zone="$ZONE" --quiet ;;
  *) sed -n '2,16p' "$0"; exit 2 ;;
esac
