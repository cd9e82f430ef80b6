"""Flag parsing shared by the command lines: a mistyped --config.<key> gets a one-line error."""

import difflib
import importlib.util
import os
import sys

from absl import flags


def load_config(spec: str):
  """The ConfigDict of 'path/to/config.py[:arg]', as --config loads it."""
  path, sep, arg = spec.partition(':')
  if not os.path.exists(path):
    raise SystemExit(f'--config: no config file {path!r}')
  module_spec = importlib.util.spec_from_file_location('_mtspec_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if sep else module.get_config()


def unknown_key(cfg, dotted: str) -> str | None:
  """'config.<path>: no such key (...)' for the first part of `dotted` cfg lacks, else None."""
  node, seen = cfg, 'config'
  for part in dotted.split('.'):
    keys = list(node.keys()) if hasattr(node, 'keys') else []
    if part not in keys:
      near = difflib.get_close_matches(part, keys, n=3, cutoff=0.5)
      hint = f'did you mean {", ".join(f"{seen}.{k}" for k in near)}? ' if near else ''
      return (
        f'{seen}.{part}: no such key ({hint}{seen} has: {", ".join(sorted(keys))})'
        if keys
        else f'{seen}.{part}: no such key ({seen} is a value, not a group)'
      )
    node, seen = node[part], f'{seen}.{part}'
  return None


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (pass as app.run(main, flags_parser=parse_flags)); an override of a
  key the config does not have exits 2 naming it and the nearest keys, not a traceback."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError):  # raised inside --config's parsing, before its value is set
    given = [a.split('=', 1) for a in argv[1:] if a.startswith('--config=')]
    if not given:
      raise
    cfg = load_config(given[-1][1])
    for arg in argv[1:]:
      name = arg.split('=', 1)[0].lstrip('-')
      if name.startswith('config.'):
        message = unknown_key(cfg, name[len('config.') :])
        if message:
          print(f'error: {message}', file=sys.stderr)
          sys.exit(2)
    raise
