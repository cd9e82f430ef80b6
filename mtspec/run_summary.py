"""A run's summary.json (written by the trainer when the run ends): read it, or ask if it is done."""

from mtspec import paths


def read(run_dir: str) -> dict:
  return paths.read_json(paths.join(run_dir, 'summary.json'))


def is_complete(run_dir: str, total_steps: int) -> bool:
  """Whether the run in run_dir has trained all total_steps steps."""
  if not paths.exists(paths.join(run_dir, 'summary.json')):
    return False
  return read(run_dir).get('step') == total_steps
