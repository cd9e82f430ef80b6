"""A run's summary.json (written by the trainer when the run ends): read it, or ask if it is done."""

import json
import os


def read(run_dir: str) -> dict:
  with open(os.path.join(run_dir, 'summary.json')) as f:
    return json.load(f)


def is_complete(run_dir: str, total_steps: int) -> bool:
  """Whether the run in run_dir has trained all total_steps steps."""
  if not os.path.exists(os.path.join(run_dir, 'summary.json')):
    return False
  return read(run_dir).get('step') == total_steps
