"""What the Anthropic and OpenAI-compatible clients share: the official SDK client (bounded
timeouts; retries of 408/409/429/5xx, timeouts and dropped or cut-short connections with
exponential backoff, honouring retry-after / retry-after-ms), a request cache keyed by the
hash of the request body, token/cost accounting, and an LLM backend that re-asks on answers
that do not parse.

The API key is handed only to the SDK client, which sends it in a header; every error or log
line that could echo a server's body goes through `_redact` first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import threading
import time
import urllib.parse  # URL parsing only, for describe(); requests go through the SDKs

from mtspec.spec import prompts
from mtspec.spec.backends.base import Backend, GenerationError, Task
from mtspec.spec.cache import KeyedJsonl

log = logging.getLogger('mtspec.spec.http')

# USD per million (input, output) tokens; --price-in/--price-out override, unknown -> null.
PRICES = {
  'claude-opus-4-1': (15.0, 75.0),
  'claude-sonnet-4-5': (3.0, 15.0),
  'claude-sonnet-4-20250514': (3.0, 15.0),
  'claude-3-5-haiku-latest': (0.8, 4.0),
  'gpt-4o': (2.5, 10.0),
  'gpt-4o-mini': (0.15, 0.6),
}
# The Message Batches API bills every token at half the Messages API price.
BATCH_DISCOUNT = 0.5
# Statuses the SDKs retry; one still failing after the last retry means they gave up.
_TRANSIENT_STATUS = {408, 409, 429}
# What reading a 200 whose body is not the protocol's JSON can raise (JSON, pydantic, access).
_UNREADABLE = (ValueError, KeyError, IndexError, TypeError, AttributeError)


class HttpClient:
  """One chat-style completion endpoint behind an SDK client; subclasses wrap the SDK."""

  name = 'http'
  key_env = ''  # environment variable holding the API key
  url_env = ''  # environment variable overriding the base URL
  default_url = ''
  default_model = ''
  key_required = True
  sdk = None  # the SDK module (anthropic or openai), for its exception classes

  def __init__(
    self,
    cache_path,
    model: str | None = None,
    base_url: str | None = None,
    concurrency: int = 8,
    timeout: float = 120.0,
    max_retries: int = 6,
    backoff: float = 1.0,
    max_backoff: float = 60.0,
    max_tokens: int = 2048,
    temperature: float = 1.0,
    prices: tuple[float, float] | None = None,
  ):
    self.model = model or self.default_model
    self.base_url = (base_url or os.environ.get(self.url_env) or self.default_url).rstrip('/')
    self._key = os.environ.get(self.key_env, '')
    if self.key_required and not self._key:
      raise GenerationError(f'{self.name}: environment variable {self.key_env} is not set')
    self.concurrency, self.timeout, self.max_retries = concurrency, timeout, max_retries
    self.backoff, self.max_backoff = backoff, max_backoff
    self.max_tokens, self.temperature = max_tokens, temperature
    self.prices = prices or PRICES.get(self.model)
    self.cache = KeyedJsonl(cache_path)
    self._lock = threading.Lock()
    self.stats = {'requests': 0, 'failed_attempts': 0, 'cache_hits': 0}
    self.client = self.make_client()

  # -- protocol hooks ------------------------------------------------------------------
  def make_client(self):
    """The SDK client, with this client's key, base URL, timeout and retries."""
    raise NotImplementedError

  def body(self, system: str, prompt: str) -> dict:
    """The request body; its hash is the cache key."""
    raise NotImplementedError

  def send(self, body: dict):
    """The SDK's raw response (`.parse()`, `.retries_taken`) for one request body."""
    raise NotImplementedError

  def extract(self, message) -> tuple[str, int, int]:
    """(text, input_tokens, output_tokens) from the SDK's parsed response."""
    raise NotImplementedError

  # -- shared machinery ----------------------------------------------------------------
  def _redact(self, text: str) -> str:
    return text.replace(self._key, '[redacted]') if self._key else text

  def describe(self) -> dict:
    parts = urllib.parse.urlsplit(self.base_url)
    netloc = parts.netloc.rsplit('@', 1)[-1]  # never record user:pass@
    return {
      'backend': self.name,
      'model': self.model,
      'base_url': urllib.parse.urlunsplit(parts._replace(netloc=netloc)),
    }

  @staticmethod
  def request_key(body: dict) -> str:
    """The request cache key: sha256 of the body as JSON with sorted keys."""
    data = json.dumps(body, sort_keys=True, ensure_ascii=False).encode('utf-8')
    return hashlib.sha256(data).hexdigest()

  def complete(self, system: str, prompt: str) -> str:
    body = self.body(system, prompt)
    key = self.request_key(body)
    hit = self.cache.get(key)
    if hit is not None:
      with self._lock:
        self.stats['cache_hits'] += 1
      return hit['text']
    text, n_in, n_out = self._request(body)
    with self._lock:
      self.stats['requests'] += 1
    self.cache.put(key, text=text, input_tokens=n_in, output_tokens=n_out, model=self.model)
    return text

  def _request(self, body: dict) -> tuple[str, int, int]:
    attempts = self.max_retries + 1
    # The SDKs retry failed exchanges, not a 200 whose body is unreadable: that is retried here.
    for attempt in range(attempts):
      raw = self._send(body)
      with self._lock:
        self.stats['failed_attempts'] += raw.retries_taken
      try:
        return self.extract(raw.parse())
      except _UNREADABLE as e:
        with self._lock:
          self.stats['failed_attempts'] += 1
        what = f'unreadable response body ({type(e).__name__})'
        if attempt == self.max_retries:
          raise GenerationError(f'{self.name}: gave up after {attempts} attempts: {what}')
        wait = min(self.max_backoff, self.backoff * 2**attempt) * random.uniform(0.5, 1)
        log.warning('%s: %s; retry %d in %.2fs', self.name, what, attempt + 1, wait)
        time.sleep(wait)
    raise AssertionError('unreachable')

  def _send(self, body: dict):
    """`send`, with the SDK's final errors turned into key-free GenerationErrors."""
    with self.sdk_errors():
      return self.send(body)

  @contextlib.contextmanager
  def sdk_errors(self):
    """Turns the SDK's final errors (after its own retries) into key-free GenerationErrors."""
    try:
      yield
    except self.sdk.APIStatusError as e:
      code, snippet = e.status_code, self._redact(e.response.text[:300])
      if code in _TRANSIENT_STATUS or code >= 500:
        raise GenerationError(
          f'{self.name}: gave up after {self.max_retries + 1} attempts: HTTP {code}: {snippet}'
        ) from None
      where = self.describe()['base_url']  # without any user:pass@
      raise GenerationError(f'{self.name}: HTTP {code} from {where}: {snippet}') from None
    except self.sdk.APIConnectionError as e:  # timeouts, refused/reset/cut-short connections
      cause = e.__cause__ or e
      raise GenerationError(
        self._redact(
          f'{self.name}: gave up after {self.max_retries + 1} attempts: '
          f'{type(e).__name__}: {type(cause).__name__}: {cause}'
        )
      ) from None

  def usage(self) -> dict:
    """Everything paid for into this cache (across resumed runs) plus this run's counters.

    Entries answered through a message batch (`"batch": true`) are billed at half price.
    """
    entries = self.cache.values()
    n_in = sum(e['input_tokens'] for e in entries)
    n_out = sum(e['output_tokens'] for e in entries)
    cost = None
    if self.prices is not None:
      cost = round(
        sum(
          (e['input_tokens'] * self.prices[0] + e['output_tokens'] * self.prices[1])
          * (BATCH_DISCOUNT if e.get('batch') else 1.0)
          for e in entries
        )
        / 1e6,
        6,
      )
    return {
      'requests': len(entries),
      'batch_requests': sum(1 for e in entries if e.get('batch')),
      'input_tokens': n_in,
      'output_tokens': n_out,
      'cost_usd': cost,
      'this_run': dict(self.stats),
    }


class LLMBackend(Backend):
  """Prompts from `prompts`, answers through an HttpClient, re-asking when they don't parse."""

  def __init__(self, client: HttpClient, max_parse_attempts: int = 4):
    self.client, self.max_parse_attempts = client, max_parse_attempts
    self.name, self.model, self.concurrency = client.name, client.model, client.concurrency

  def dialogue(self, task: Task):
    """A generator: yields each (system, prompt) to ask, is sent the answer's text, and
    returns the parsed result; one-by-one and batch mode drive the same re-asks."""
    prompt = prompts.render(task.level, task.inputs, task.n)
    note = ''
    for attempt in range(self.max_parse_attempts):
      # The note changes the request, so a re-ask is a new cache entry, not the bad one.
      text = yield prompts.SYSTEM, prompt + note
      try:
        return prompts.parse(task.level, task.inputs, task.n, text)
      except prompts.ParseError as e:
        log.warning('%s: unparseable %s answer (%s); asking again', self.name, task.level, e)
        note = (
          f'\n\n(Attempt {attempt + 2}: the previous answer could not be used: {e}. '
          'Follow the output format exactly.)'
        )
    raise GenerationError(
      f'{self.name}: no parseable {task.level} answer after {self.max_parse_attempts} attempts'
    )

  def run(self, task: Task):
    talk = self.dialogue(task)
    ask = next(talk)
    while True:
      try:
        ask = talk.send(self.client.complete(*ask))
      except StopIteration as done:
        return done.value

  def usage(self) -> dict:
    return self.client.usage()

  def describe(self) -> dict:
    return self.client.describe()
