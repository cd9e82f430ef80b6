"""Command line: python -m mtspec.main --config=configs/lm.py:small --workdir=/tmp/run"""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from mtspec import config as config_lib

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file:variant.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output directory; rerun to resume.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax and tfds are chatty at INFO
  from mtspec import trainer  # after flag parsing: imports jax
  try:
    result = trainer.train(_CONFIG.value, _WORKDIR.value)
  except config_lib.ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(f"done: step {result['step']} loss {result['loss']:.4f} "
        f"tokens/s {result.get('tokens_per_second', 0):.0f} mfu {result.get('mfu', 0):.3f}")


if __name__ == '__main__':
  app.run(main)
