"""Command line: python -m mtspec.main --config=configs/lm.py:small --workdir=/tmp/run

Exit status: 0 done; 2 a bad config, input or workdir (unwritable, in use, a damaged
checkpoint that cannot be fallen back from); 3 a non-finite loss; 4 a checkpoint write failed.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from mtspec import cli, errors
from mtspec import config as config_lib

_CONFIG = config_flags.DEFINE_config_file(
  'config', None, 'Experiment config file:variant.', lock_config=True
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output directory; rerun to resume.')
_COORDINATOR = flags.DEFINE_string(
  'coordinator',
  '',
  'host:port of process 0 (multi-process CPU/GPU runs; TPU VM slices need nothing).',
)
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', 0, 'Processes in a multi-process run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', -1, "This process's index in that run.")
flags.mark_flags_as_required(['config', 'workdir'])


def _without_orbax_tracebacks(record) -> bool:
  if '/orbax/' in record.pathname:
    record.exc_info = record.exc_text = None
  return True


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax and tfds are chatty at INFO
  # orbax logs a failed background write with its tracebacks; the run ends with their cause
  logging.get_absl_handler().addFilter(_without_orbax_tracebacks)
  import jax

  from mtspec import checkpoint, distributed, experiment, paths, trainer, workdir  # after flags

  distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  cfg = _CONFIG.value
  try:
    paths.check_bucket(_WORKDIR.value, 'workdir')
    checkpoint.ensure_writable(_WORKDIR.value)  # the lock file goes there first
    with workdir.lock(_WORKDIR.value, jax.process_index() == 0):
      if 'experiment' in cfg:
        tree = experiment.run_tree(cfg, _WORKDIR.value)
        for r in tree['runs']:
          print(f'{r["name"]}: {" -> ".join(r["phases"])} final checkpoint {r["final_checkpoint"]}')
        print(f'experiment summary: {_WORKDIR.value}/experiment.json')
        return
      result = trainer.train(cfg, _WORKDIR.value)
  except (
    config_lib.ConfigError,
    FileNotFoundError,
    ValueError,
    workdir.WorkdirInUse,
    errors.NotWritable,
    errors.DamagedCheckpoint,
  ) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except trainer.NonFiniteLoss as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(3)
  except errors.CheckpointWriteError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(4)
  m = result['last_metrics']
  print(
    f'done: {result["run"]} step {result["step"]} loss {m.get("loss", float("nan")):.4f} '
    f'tokens/s {m.get("tokens_per_second", 0):.0f} mfu {m.get("mfu", 0):.3f} '
    f'final checkpoint {result["final_checkpoint"]}'
  )


if __name__ == '__main__':
  from mtspec.cpu import hugepages  # before anything else: glibc reads tunables at start only

  hugepages.reexec_with_huge_pages()
  app.run(main, flags_parser=cli.parse_flags)
