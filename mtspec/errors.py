"""Errors the command lines turn into one-line messages (no traceback)."""


class ConfigError(ValueError):
  """A config key has a bad value; the message names the key."""


class NotWritable(RuntimeError):
  """A folder the run must write (workdir, checkpoints) refuses writes; the message names it."""


class DamagedCheckpoint(RuntimeError):
  """A checkpoint cannot be read; the message names its directory and what is wrong."""


class CheckpointWriteError(RuntimeError):
  """Saving a checkpoint failed (in the background or not); the message names the directory."""
