"""Multi-host start-up through JAX's own multi-controller runtime (jax.distributed)."""

import os

import jax


def initialize(coordinator: str = '', num_processes: int = 0, process_id: int = -1):
  """Joins the other processes when there are several; a no-op for a single process.

  Cloud TPU VM slices (and SLURM/Kubernetes GPU jobs) describe themselves through the
  environment, so a bare jax.distributed.initialize() finds its peers. On CPU or GPU hosts
  without such an environment, pass the coordinator's address, the process count and this
  process's id (flags --coordinator, --num_processes, --process_id, or the environment
  variables MTSPEC_COORDINATOR, MTSPEC_NUM_PROCESSES, MTSPEC_PROCESS_ID).
  """
  coordinator = coordinator or os.environ.get('MTSPEC_COORDINATOR', '')
  num_processes = num_processes or int(os.environ.get('MTSPEC_NUM_PROCESSES', '0'))
  if process_id < 0:
    process_id = int(os.environ.get('MTSPEC_PROCESS_ID', '-1'))
  if coordinator:
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise ValueError(
        f'--coordinator={coordinator} needs --num_processes >= 1 and '
        f'0 <= --process_id < num_processes (got {num_processes}, {process_id})'
      )
    if jax.config.jax_platforms in (None, '', 'cpu') and not _has_accelerator_env():
      jax.config.update('jax_cpu_collectives_implementation', 'gloo')  # CPU collectives
    jax.distributed.initialize(coordinator, num_processes, process_id)
  elif _multi_worker_tpu():
    jax.distributed.initialize()


def _multi_worker_tpu() -> bool:
  return len(os.environ.get('TPU_WORKER_HOSTNAMES', '').split(',')) > 1


def _has_accelerator_env() -> bool:
  return bool(os.environ.get('CUDA_VISIBLE_DEVICES')) or bool(os.environ.get('TPU_NAME'))
