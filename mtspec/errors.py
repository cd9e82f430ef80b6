"""Errors the command lines turn into one-line messages (no traceback)."""


class ConfigError(ValueError):
  """A config key has a bad value; the message names the key."""
