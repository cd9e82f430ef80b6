"""Generation backends behind one interface (`base.Backend`); `make` builds one by name."""

from __future__ import annotations

from pathlib import Path

from mtspec import paths
from mtspec.spec.backends.base import Backend, GenerationError, Task

NAMES = ('template', 'anthropic', 'openai')


# Options of batch mode (`make(..., batch=True)`), see backends/batch.py.
BATCH_OPTIONS = ('poll_interval', 'max_batch_requests', 'max_batch_bytes', 'batch_attempts')


def make(name: str, cache_dir: str | Path, batch: bool = False, **http_options) -> Backend:
  """A backend by name; HTTP ones keep their request cache under `cache_dir`.

  `batch=True` (anthropic only) sends each stage's requests through the Message Batches API.
  """
  batch_opts = {k: http_options.pop(k) for k in BATCH_OPTIONS if k in http_options}
  if batch and name != 'anthropic':
    raise ValueError(f'batch mode needs the anthropic backend, not {name!r}')
  if name == 'template':
    from mtspec.spec.backends.template import TemplateBackend

    return TemplateBackend()
  from mtspec.spec.backends.http import LLMBackend

  if name == 'anthropic':
    from mtspec.spec.backends.anthropic import AnthropicClient as client
  elif name == 'openai':
    from mtspec.spec.backends.openai import OpenAIClient as client
  else:
    raise ValueError(f'unknown backend {name!r}; choose from {", ".join(NAMES)}')
  opts = {k: v for k, v in http_options.items() if v is not None}
  http = client(paths.join(cache_dir, f'requests-{name}.jsonl'), **opts)
  if batch:
    from mtspec.spec.backends.batch import BatchBackend

    return BatchBackend(http, **{k: v for k, v in batch_opts.items() if v is not None})
  return LLMBackend(http)


__all__ = ['Backend', 'GenerationError', 'Task', 'NAMES', 'make']
