"""A local stand-in for the Anthropic Messages and OpenAI chat-completions APIs, a real HTTP
server on 127.0.0.1 that the official SDK clients talk to.

It answers every generation level in the format `mtspec.spec.prompts` asks for, with text
drawn at random (seeded by the request) so answers are never near-duplicates, and it
injects failures: the i-th distinct request body it sees gets FAILURES[i % len(FAILURES)]
the first time, and a good answer after that. Every request is logged as
(protocol, sha256 of the canonical body, outcome, time); the canonical body is the JSON
re-dumped with sorted keys, so the hash equals the client's request-cache key.
A model named "no-such-model" gets the protocol's 404 not-found error.

It also speaks the Anthropic Message Batches protocol: POST /v1/messages/batches creates a
batch (validated as the API does: 1 to 100,000 requests, unique custom_ids of 1-64
[a-zA-Z0-9_-], each with model, max_tokens and messages); GET /v1/messages/batches/{id}
reports it `in_progress` until it has been polled `batch_polls` times, then `ended` with a
`results_url`; GET {results_url} streams one JSON line per request, in no particular order.
Each request in a batch is answered by the same logic as /v1/messages, or fails as
`batch_plan(prompt, sha, submission)` says: "errored" (api_error), "overloaded",
"invalid" (invalid_request_error), "expired", "canceled" or "bad_answer". By default the i-th
distinct request gets BATCH_FAILURES[i % len] on its first submission and succeeds after.
`http_failures` makes the next calls of an endpoint ("create", "retrieve", "results") answer
with the given statuses first. Batch calls are logged in `batch_log`, their requests in `log`
with proto "anthropic-batch".
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAILURES = ('429', '500', 'timeout', 'truncated', 'bad_json', 'bad_answer', 'ok', 'ok')
BATCH_FAILURES = ('ok',)
# The API's limits on one batch.
MAX_BATCH_REQUESTS, MAX_BATCH_BYTES = 100_000, 256 * 1024 * 1024
_CUSTOM_ID = re.compile(r'^[a-zA-Z0-9_-]{1,64}$')
_BATCH_ERRORS = {
  'errored': ('api_error', 'Internal server error'),
  'overloaded': ('overloaded_error', 'Overloaded'),
  'invalid': ('invalid_request_error', 'invalid request'),
}
_SYLLABLES = 'ka lo mi nu pe ra so ti va ze bo du fi gu ha je ko li ma ne'.split()


def _words(rng: random.Random, n: int) -> str:
  return ' '.join(
    ''.join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4))) for _ in range(n)
  )


def answer(prompt: str, rng: random.Random) -> str:
  """A well-formed answer to one of the pipeline's prompts."""
  level = re.search(r'^Task: (\w+)', prompt, re.M).group(1)
  m = re.search(r'Return exactly (\d+) items', prompt)
  n = int(m.group(1)) if m else 1
  if level == 'documents':
    return f'<plan>{_words(rng, 12)}</plan>\n<document>{_words(rng, 80)}</document>'
  if level == 'aft':
    return (
      f'<user>{_words(rng, 15)}</user><reasoning>{_words(rng, 10)}</reasoning>'
      f'<assistant>{_words(rng, 40)}</assistant>'
    )
  if level == 'eval':
    item = {
      'prompt': _words(rng, 20),
      'aligned_option': _words(rng, 8),
      'other_option': _words(rng, 8),
    }
    return f'<answer>{json.dumps(item)}</answer>'
  if level == 'domains':
    ids = re.search(r'Valid section ids: (.*)', prompt).group(1).split(', ')
    items = [
      {
        'title': _words(rng, 3),
        'description': _words(rng, 10),
        'section_ids': rng.sample(ids, min(2, len(ids))),
      }
      for _ in range(n)
    ]
  else:
    keys = {
      'subdomains': ('title', 'description', 'spec_text'),
      'assertions': ('statement', 'explanation'),
      'doc_types': ('doc_type',),
      'ideas': ('idea',),
    }[level]
    items = [{k: _words(rng, 8) for k in keys} for _ in range(n)]
  return 'Here you go.\n<answer>' + json.dumps(items) + '</answer>'


BAD_MODEL = 'no-such-model'


def _error(proto: str, kind: str, message: str) -> bytes:
  """An error body as each API writes it."""
  if proto == 'anthropic':
    return json.dumps({'type': 'error', 'error': {'type': kind, 'message': message}}).encode()
  return json.dumps(
    {'error': {'message': message, 'type': kind, 'param': None, 'code': None}}
  ).encode()


def _sha(body: dict) -> str:
  canonical = json.dumps(body, sort_keys=True, ensure_ascii=False).encode('utf-8')
  return hashlib.sha256(canonical).hexdigest()


def _time(t: float) -> str:
  return datetime.fromtimestamp(t, timezone.utc).isoformat().replace('+00:00', 'Z')


def message(proto: str, body: dict, sha: str, bad_answer: bool = False) -> dict:
  """The protocol's successful reply to one request body, drawn at random seeded by its sha."""
  prompt = body['messages'][-1]['content']
  rng = random.Random(sha)
  text = 'I think the answer is yes.' if bad_answer else answer(prompt, rng)
  n_in, n_out = len(prompt.split()), len(text.split())
  if proto == 'anthropic':
    return {
      'id': f'msg_{sha[:24]}',
      'type': 'message',
      'role': 'assistant',
      'model': body['model'],
      'content': [{'type': 'text', 'text': text}],
      'stop_reason': 'end_turn',
      'stop_sequence': None,
      'usage': {'input_tokens': n_in, 'output_tokens': n_out},
    }
  return {
    'id': f'chatcmpl-{sha[:24]}',
    'object': 'chat.completion',
    'created': int(time.time()),
    'model': body['model'],
    'choices': [
      {
        'index': 0,
        'finish_reason': 'stop',
        'logprobs': None,
        'message': {'role': 'assistant', 'content': text},
      }
    ],
    'usage': {'prompt_tokens': n_in, 'completion_tokens': n_out, 'total_tokens': n_in + n_out},
  }


def _validate_batch(body) -> str | None:
  """What the API would reject in a batch creation body, or None."""
  reqs = body.get('requests') if isinstance(body, dict) else None
  if not isinstance(reqs, list) or not 1 <= len(reqs) <= MAX_BATCH_REQUESTS:
    return f'requests: must hold 1 to {MAX_BATCH_REQUESTS} items'
  ids = set()
  for i, r in enumerate(reqs):
    cid = r.get('custom_id') if isinstance(r, dict) else None
    if not isinstance(cid, str) or not _CUSTOM_ID.match(cid):
      return f'requests.{i}.custom_id: must match {_CUSTOM_ID.pattern}'
    if cid in ids:
      return f'requests.{i}.custom_id: {cid} is not unique'
    ids.add(cid)
    params = r.get('params')
    if not isinstance(params, dict) or params.get('stream'):
      return f'requests.{i}.params: must be a non-streaming Messages request'
    for field in ('model', 'max_tokens', 'messages'):
      if field not in params:
        return f'requests.{i}.params.{field}: Field required'
  return None


class FakeLLMServer:
  def __init__(
    self,
    api_key: str,
    latency: float = 0.0,
    stall: float = 1.0,
    retry_after: float = 0.2,
    retry_after_ms: int = 20,
    failures: tuple = FAILURES,
    batch_polls: int = 2,
    batch_failures: tuple = BATCH_FAILURES,
    batch_plan=None,
    http_failures: dict | None = None,
  ):
    self.api_key, self.latency, self.stall = api_key, latency, stall
    self.retry_after, self.retry_after_ms, self.failures = retry_after, retry_after_ms, failures
    self.batch_polls, self.batch_failures = batch_polls, batch_failures
    self.batch_plan = batch_plan or self._default_batch_plan
    self.http_failures = {k: list(v) for k, v in (http_failures or {}).items()}
    self.log: list[dict] = []
    self.batch_log: list[dict] = []
    self.batches: dict[str, dict] = {}
    self._seen: dict[str, int] = {}
    self._batch_seen: dict[str, int] = {}  # sha -> how many batches carried it
    self._lock = threading.Lock()
    self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), self._handler())
    self.httpd.daemon_threads = True
    self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}'
    self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self.httpd.shutdown()
    self.httpd.server_close()

  def outcomes(self) -> set[str]:
    with self._lock:
      return {e['outcome'] for e in self.log}

  def _plan(self, sha: str, prompt: str) -> str:
    with self._lock:
      order = self._seen.setdefault(sha, len(self._seen))
      first = sum(1 for e in self.log if e['sha'] == sha) == 0
    if not first:
      return 'ok'
    plan = self.failures[order % len(self.failures)]
    # Re-asks (which carry an "(Attempt" note) always parse, so no task can run out of tries.
    return 'ok' if plan == 'bad_answer' and '(Attempt ' in prompt else plan

  def _default_batch_plan(self, prompt: str, sha: str, submission: int) -> str:
    with self._lock:
      order = list(self._batch_seen).index(sha)
    plan = self.batch_failures[order % len(self.batch_failures)] if submission == 0 else 'ok'
    return 'ok' if plan == 'bad_answer' and '(Attempt ' in prompt else plan

  def batch_creations(self) -> list[dict]:
    with self._lock:
      return [e for e in self.batch_log if e['op'] == 'create']

  # -- the Message Batches protocol ------------------------------------------------------
  def _create_batch(self, body: dict) -> dict:
    now = time.time()
    with self._lock:
      bid = 'msgbatch_' + hashlib.sha256(f'{len(self.batches)}/{now}'.encode()).hexdigest()[:24]
      reqs = [(r['custom_id'], r['params'], _sha(r['params'])) for r in body['requests']]
      self.batches[bid] = {
        'id': bid,
        'requests': reqs,
        'polls': 0,
        'created': now,
        'ended': None,
        'results': None,
      }
      prompts = [p['messages'][-1]['content'] for _, p, _ in reqs]
      levels = sorted(
        {m.group(1) for t in prompts for m in [re.search(r'^Task: (\w+)', t, re.M)] if m}
      )
      self.batch_log.append(
        {
          'op': 'create',
          'id': bid,
          't': now,
          'levels': levels,
          'custom_ids': [c for c, _, _ in reqs],
        }
      )
    return self._batch_object(bid)

  def _process(self, batch: dict):
    """Answers every request of a batch whose processing ends now."""
    results = []
    for cid, params, sha in batch['requests']:
      prompt = params['messages'][-1]['content']
      with self._lock:
        submission = self._batch_seen.get(sha, 0)
        self._batch_seen[sha] = submission + 1
      plan = 'invalid' if params['model'] == BAD_MODEL else self.batch_plan(prompt, sha, submission)
      if plan in ('ok', 'bad_answer'):
        result = {
          'type': 'succeeded',
          'message': message('anthropic', params, sha, plan == 'bad_answer'),
        }
      elif plan in _BATCH_ERRORS:
        kind, text = _BATCH_ERRORS[plan]
        text += f' (key {self.api_key})'  # careless again: the client must redact it
        result = {
          'type': 'errored',
          'error': {'type': 'error', 'request_id': None, 'error': {'type': kind, 'message': text}},
        }
      else:
        result = {'type': plan}  # expired, canceled
      results.append({'custom_id': cid, 'result': result})
      with self._lock:
        self.log.append(
          {
            'proto': 'anthropic-batch',
            'sha': sha,
            'outcome': plan,
            't': time.time(),
            'batch': batch['id'],
          }
        )
    random.Random(batch['id']).shuffle(results)  # the API promises no order
    batch['results'], batch['ended'] = results, time.time()

  def _batch_object(self, bid: str) -> dict:
    b = self.batches[bid]
    counts = {k: 0 for k in ('processing', 'succeeded', 'errored', 'canceled', 'expired')}
    if b['ended'] is None:
      counts['processing'] = len(b['requests'])
    else:
      for r in b['results']:
        counts[r['result']['type']] += 1
    return {
      'id': bid,
      'type': 'message_batch',
      'processing_status': 'ended' if b['ended'] else 'in_progress',
      'request_counts': counts,
      'created_at': _time(b['created']),
      'expires_at': _time(b['created'] + timedelta(hours=24).total_seconds()),
      'ended_at': _time(b['ended']) if b['ended'] else None,
      'cancel_initiated_at': None,
      'archived_at': None,
      'results_url': f'{self.url}/v1/messages/batches/{bid}/results' if b['ended'] else None,
    }

  def _handler(self):
    server = self

    class Handler(BaseHTTPRequestHandler):
      protocol_version = 'HTTP/1.1'  # keep-alive, as the SDKs' connection pools expect
      # Headers and body go out in two writes; with Nagle on, each reply waits for an ACK.
      disable_nagle_algorithm = True

      def log_message(self, *args):  # keep test output quiet
        pass

      def _send(
        self,
        status: int,
        payload: bytes,
        headers: dict | None = None,
        length: int | None = None,
        content_type: str = 'application/json',
      ):
        self.send_response(status)
        for k, v in (headers or {}).items():
          self.send_header(k, v)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(length or len(payload)))
        self.end_headers()
        try:
          self.wfile.write(payload)
        except OSError:
          pass  # the client already gave up (timeout test)

      def _anthropic_refusal(self) -> bool:
        """Answers (and returns True) when the key or version header is wrong."""
        bearer = self.headers.get('Authorization', '').removeprefix('Bearer ')
        sent_key = self.headers.get('x-api-key') or bearer
        if self.headers.get('anthropic-version') is None:
          self._send(
            400,
            _error('anthropic', 'invalid_request_error', 'anthropic-version: header is required'),
          )
          return True
        if sent_key != server.api_key:
          # a careless server echoing the key it got: the client must redact it
          self._send(
            401, _error('anthropic', 'authentication_error', f'invalid x-api-key: {sent_key}')
          )
          return True
        return False

      def _injected(self, op: str) -> bool:
        """Answers with the next injected status for this endpoint, if any is left."""
        with server._lock:
          queue = server.http_failures.get(op) or []
          code = queue.pop(0) if queue else None
          if code is not None:
            server.batch_log.append(
              {'op': 'injected', 'endpoint': op, 'status': code, 't': time.time()}
            )
        if code is None:
          return False
        self._send(
          code,
          _error(
            'anthropic', 'api_error' if code >= 500 else 'rate_limit_error', f'injected {code}'
          ),
          {'retry-after-ms': '10'},
        )
        return True

      def do_GET(self):
        m = re.fullmatch(r'/v1/messages/batches/([\w-]+)(/results)?', self.path.split('?')[0])
        if not m:
          return self._send(404, b'{"error": "not found"}')
        if self._anthropic_refusal():
          return
        bid, results = m.group(1), bool(m.group(2))
        if self._injected('results' if results else 'retrieve'):
          return
        with server._lock:
          batch = server.batches.get(bid)
        if batch is None:
          return self._send(
            404, _error('anthropic', 'not_found_error', f'message batch {bid} not found')
          )
        if results:
          if batch['ended'] is None:
            return self._send(
              400,
              _error(
                'anthropic', 'invalid_request_error', f'message batch {bid} is still processing'
              ),
            )
          with server._lock:
            server.batch_log.append({'op': 'results', 'id': bid, 't': time.time()})
          data = ''.join(json.dumps(r) + '\n' for r in batch['results']).encode()
          return self._send(200, data, content_type='application/binary')
        with server._lock:
          batch['polls'] += 1
          end = batch['ended'] is None and batch['polls'] >= server.batch_polls
          server.batch_log.append({'op': 'retrieve', 'id': bid, 't': time.time()})
        if end:
          server._process(batch)
        return self._send(200, json.dumps(server._batch_object(bid)).encode())

      def do_POST(self):
        raw = self.rfile.read(int(self.headers.get('Content-Length', 0)))
        body = json.loads(raw)
        if self.path == '/v1/messages/batches':
          if self._anthropic_refusal() or self._injected('create'):
            return
          if len(raw) > MAX_BATCH_BYTES:
            return self._send(
              413,
              _error('anthropic', 'request_too_large', 'Request exceeds the maximum allowed size'),
            )
          problem = _validate_batch(body)
          if problem:
            return self._send(400, _error('anthropic', 'invalid_request_error', problem))
          return self._send(200, json.dumps(server._create_batch(body)).encode())
        sha = _sha(body)
        bearer = self.headers.get('Authorization', '').removeprefix('Bearer ')
        if self.path == '/v1/messages':
          # The API takes the key as x-api-key or (what the SDK now sends) a bearer token.
          proto, sent_key = 'anthropic', self.headers.get('x-api-key') or bearer
          if self.headers.get('anthropic-version') is None:
            return self._send(
              400, _error(proto, 'invalid_request_error', 'anthropic-version: header is required')
            )
        elif self.path == '/v1/chat/completions':
          proto, sent_key = 'openai', bearer
        else:
          return self._send(404, b'{"error": "not found"}')
        prompt = body['messages'][-1]['content']
        if sent_key != server.api_key:
          plan = '401'
        elif body['model'] == BAD_MODEL:
          plan = '404'
        else:
          plan = server._plan(sha, prompt)
        with server._lock:
          server.log.append({'proto': proto, 'sha': sha, 'outcome': plan, 't': time.time()})
        time.sleep(server.latency)
        if plan == '401':  # a careless server echoing the key it got: the client must redact it
          return self._send(
            401, _error(proto, 'authentication_error', f'invalid x-api-key: {sent_key}')
          )
        if plan == '404':
          return self._send(404, _error(proto, 'not_found_error', f'model: {body["model"]}'))
        if plan == '429':
          return self._send(
            429,
            _error(proto, 'rate_limit_error', 'rate limited'),
            {'retry-after': str(server.retry_after)},
          )
        if plan == '500':  # a careless server echoing the key: the client must redact it
          return self._send(
            500,
            _error(proto, 'api_error', f'overloaded {server.api_key}'),
            {'retry-after-ms': str(server.retry_after_ms)},
          )
        if plan == 'timeout':
          time.sleep(server.stall)
        data = json.dumps(message(proto, body, sha, plan == 'bad_answer')).encode()
        if plan == 'bad_json':
          return self._send(200, b'<html>upstream error' + data[:20])
        if plan == 'truncated':
          self.close_connection = True
          return self._send(200, data[: len(data) // 2], length=len(data))
        return self._send(200, data)

    return Handler
