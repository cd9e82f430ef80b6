"""Generation backends behind one interface (`base.Backend`); `make` builds one by name."""
from __future__ import annotations

from pathlib import Path

from mtspec.spec.backends.base import Backend, GenerationError, Task

NAMES = ("template", "anthropic", "openai")


def make(name: str, cache_dir: str | Path, **http_options) -> Backend:
  """A backend by name; HTTP ones keep their request cache under `cache_dir`."""
  if name == "template":
    from mtspec.spec.backends.template import TemplateBackend
    return TemplateBackend()
  from mtspec.spec.backends.http import LLMBackend
  if name == "anthropic":
    from mtspec.spec.backends.anthropic import AnthropicClient as client
  elif name == "openai":
    from mtspec.spec.backends.openai import OpenAIClient as client
  else:
    raise ValueError(f"unknown backend {name!r}; choose from {', '.join(NAMES)}")
  opts = {k: v for k, v in http_options.items() if v is not None}
  return LLMBackend(client(Path(cache_dir) / f"requests-{name}.jsonl", **opts))


__all__ = ["Backend", "GenerationError", "Task", "NAMES", "make"]
