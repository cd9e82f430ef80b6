"""What the Anthropic and OpenAI-compatible clients share: bounded concurrency, timeouts,
retries with exponential backoff honouring retry-after, a request cache keyed by the hash
of the request body, token/cost accounting, and an LLM backend that re-asks on answers
that do not parse.

The API key lives only in request headers; every error or log line that could echo a
server's body goes through `_redact` first.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from mtspec.spec import prompts
from mtspec.spec.backends.base import Backend, GenerationError, Task
from mtspec.spec.cache import KeyedJsonl

log = logging.getLogger("mtspec.spec.http")

# USD per million (input, output) tokens; --price-in/--price-out override, unknown -> null.
PRICES = {
    "claude-opus-4-1": (15.0, 75.0), "claude-sonnet-4-5": (3.0, 15.0),
    "claude-sonnet-4-20250514": (3.0, 15.0), "claude-3-5-haiku-latest": (0.8, 4.0),
    "gpt-4o": (2.5, 10.0), "gpt-4o-mini": (0.15, 0.6),
}
_TRANSIENT_STATUS = {408, 409, 425, 429}


class _Transient(Exception):
  """A failure worth retrying, with the server's requested wait if it gave one."""

  def __init__(self, what: str, wait: float | None = None):
    super().__init__(what)
    self.wait = wait


def _retry_after(headers) -> float | None:
  if headers is None:
    return None
  for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
    value = headers.get(name)
    if value is None:
      continue
    try:
      return float(value) * scale
    except ValueError:
      continue  # an HTTP-date; fall back to our own backoff
  return None


class HttpClient:
  """One chat-style completion endpoint. Subclasses say how to build and read requests."""

  name = "http"
  key_env = ""        # environment variable holding the API key
  url_env = ""        # environment variable overriding the base URL
  default_url = ""
  default_model = ""
  key_required = True

  def __init__(self, cache_path, model: str | None = None, base_url: str | None = None,
               concurrency: int = 8, timeout: float = 120.0, max_retries: int = 6,
               backoff: float = 1.0, max_backoff: float = 60.0, max_tokens: int = 2048,
               temperature: float = 1.0, prices: tuple[float, float] | None = None):
    self.model = model or self.default_model
    self.base_url = (base_url or os.environ.get(self.url_env) or self.default_url).rstrip("/")
    self._key = os.environ.get(self.key_env, "")
    if self.key_required and not self._key:
      raise GenerationError(f"{self.name}: environment variable {self.key_env} is not set")
    self.concurrency, self.timeout, self.max_retries = concurrency, timeout, max_retries
    self.backoff, self.max_backoff = backoff, max_backoff
    self.max_tokens, self.temperature = max_tokens, temperature
    self.prices = prices or PRICES.get(self.model)
    self.cache = KeyedJsonl(cache_path)
    self._slots = threading.BoundedSemaphore(concurrency)
    self._lock = threading.Lock()
    self.stats = {"requests": 0, "failed_attempts": 0, "cache_hits": 0}

  # -- protocol hooks ------------------------------------------------------------------
  def endpoint(self) -> str:
    raise NotImplementedError

  def headers(self) -> dict:
    raise NotImplementedError

  def body(self, system: str, prompt: str) -> dict:
    raise NotImplementedError

  def extract(self, data: dict) -> tuple[str, int, int]:
    """(text, input_tokens, output_tokens) from a decoded response body."""
    raise NotImplementedError

  # -- shared machinery ----------------------------------------------------------------
  def _redact(self, text: str) -> str:
    return text.replace(self._key, "[redacted]") if self._key else text

  def describe(self) -> dict:
    parts = urllib.parse.urlsplit(self.base_url)
    netloc = parts.netloc.rsplit("@", 1)[-1]  # never record user:pass@
    return {"backend": self.name, "model": self.model,
            "base_url": urllib.parse.urlunsplit(parts._replace(netloc=netloc))}

  def complete(self, system: str, prompt: str) -> str:
    body = self.body(system, prompt)
    data = json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")
    key = hashlib.sha256(data).hexdigest()
    hit = self.cache.get(key)
    if hit is not None:
      with self._lock:
        self.stats["cache_hits"] += 1
      return hit["text"]
    text, n_in, n_out = self._post(data)
    with self._lock:
      self.stats["requests"] += 1
    self.cache.put(key, text=text, input_tokens=n_in, output_tokens=n_out, model=self.model)
    return text

  def _post(self, data: bytes) -> tuple[str, int, int]:
    for attempt in range(self.max_retries + 1):
      try:
        with self._slots:
          return self._attempt(data)
      except _Transient as e:
        with self._lock:
          self.stats["failed_attempts"] += 1
        if attempt == self.max_retries:
          raise GenerationError(f"{self.name}: gave up after {attempt + 1} attempts: {e}")
        backoff = min(self.max_backoff, self.backoff * 2 ** attempt) * random.uniform(0.5, 1)
        wait = e.wait if e.wait is not None else backoff
        log.warning("%s: %s; retry %d in %.2fs", self.name, e, attempt + 1, wait)
        time.sleep(min(wait, self.max_backoff))
    raise AssertionError("unreachable")

  def _attempt(self, data: bytes) -> tuple[str, int, int]:
    req = urllib.request.Request(self.endpoint(), data=data, method="POST",
                                 headers={"content-type": "application/json", **self.headers()})
    try:
      with urllib.request.urlopen(req, timeout=self.timeout) as r:
        raw = r.read()
    except urllib.error.HTTPError as e:
      snippet = self._redact(e.read()[:300].decode("utf-8", "replace"))
      if e.code in _TRANSIENT_STATUS or e.code >= 500:
        raise _Transient(f"HTTP {e.code}: {snippet}", _retry_after(e.headers)) from None
      where = self.describe()["base_url"]  # without any user:pass@
      raise GenerationError(f"{self.name}: HTTP {e.code} from {where}: {snippet}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
      # timeouts, refused/reset connections, bodies cut short (IncompleteRead)
      raise _Transient(self._redact(f"{type(e).__name__}: {e}")) from None
    try:
      return self.extract(json.loads(raw))
    except (ValueError, KeyError, IndexError, TypeError) as e:
      raise _Transient(f"unreadable response body ({type(e).__name__})") from None

  def usage(self) -> dict:
    """Everything paid for into this cache (across resumed runs) plus this run's counters."""
    entries = self.cache.values()
    n_in = sum(e["input_tokens"] for e in entries)
    n_out = sum(e["output_tokens"] for e in entries)
    cost = None if self.prices is None else round(
        (n_in * self.prices[0] + n_out * self.prices[1]) / 1e6, 6)
    return {"requests": len(entries), "input_tokens": n_in, "output_tokens": n_out,
            "cost_usd": cost, "this_run": dict(self.stats)}


class LLMBackend(Backend):
  """Prompts from `prompts`, answers through an HttpClient, re-asking when they don't parse."""

  def __init__(self, client: HttpClient, max_parse_attempts: int = 4):
    self.client, self.max_parse_attempts = client, max_parse_attempts
    self.name, self.model, self.concurrency = client.name, client.model, client.concurrency

  def run(self, task: Task):
    prompt = prompts.render(task.level, task.inputs, task.n)
    note = ""
    for attempt in range(self.max_parse_attempts):
      # The note changes the request, so a re-ask is a new cache entry, not the bad one.
      text = self.client.complete(prompts.SYSTEM, prompt + note)
      try:
        return prompts.parse(task.level, task.inputs, task.n, text)
      except prompts.ParseError as e:
        log.warning("%s: unparseable %s answer (%s); asking again", self.name, task.level, e)
        note = (f"\n\n(Attempt {attempt + 2}: the previous answer could not be used: {e}. "
                "Follow the output format exactly.)")
    raise GenerationError(f"{self.name}: no parseable {task.level} answer after "
                          f"{self.max_parse_attempts} attempts")

  def usage(self) -> dict:
    return self.client.usage()

  def describe(self) -> dict:
    return self.client.describe()
