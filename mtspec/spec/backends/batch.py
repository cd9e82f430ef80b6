"""Batch mode for the Anthropic backend: a generation stage's uncached requests go out through
the Message Batches API (half the price of one-by-one calls) instead of one by one.

`BatchBackend.run_many` drives the same dialogue per task as one-by-one mode (the same
requests, re-asks and request cache), in rounds: every task's next uncached request is
submitted in one set of batches (split at `max_batch_requests` requests or `max_batch_bytes`),
each batch's id is recorded in `<cache>/batches-anthropic.jsonl` as soon as it is created, the
batches are polled until they end, and each succeeded result is written to the request cache
under its request's key (which is also its `custom_id`). A rerun after a kill finds the
recorded batches that were never collected and re-attaches to the ones holding requests it
still needs, instead of paying for them again. Answers that do not parse are asked again in
the next round; errored, expired and canceled requests are resubmitted up to `batch_attempts`
times (an invalid request once), and the tasks still without an answer are reported by count
in the GenerationError that ends the stage, after every finished task has been handed over.
"""

from __future__ import annotations

import collections
import json
import logging
import time

from mtspec.spec.backends.base import GenerationError, Task
from mtspec.spec.backends.http import _UNREADABLE, HttpClient, LLMBackend
from mtspec.spec.cache import KeyedJsonl

log = logging.getLogger('mtspec.spec.batch')

# The API's limits on one batch: requests, and bytes of the creation body.
MAX_BATCH_REQUESTS = 100_000
MAX_BATCH_BYTES = 256 * 1024 * 1024
# Room in a batch's byte budget for the body's envelope and the JSON separators.
_ENVELOPE_BYTES = 1024
# Errored results whose message is logged, per batch (the rest are only counted).
_LOGGED_ERRORS = 3
# An errored request of this kind fails again if resubmitted unchanged.
_PERMANENT = 'errored (invalid_request_error)'


class BatchBackend(LLMBackend):
  """An LLMBackend whose `run_many` sends a stage's requests as Message Batches."""

  def __init__(
    self,
    client: HttpClient,
    poll_interval: float = 30.0,
    max_batch_requests: int = MAX_BATCH_REQUESTS,
    max_batch_bytes: int = MAX_BATCH_BYTES,
    batch_attempts: int = 3,
    max_parse_attempts: int = 4,
  ):
    super().__init__(client, max_parse_attempts)
    if not 1 <= max_batch_requests <= MAX_BATCH_REQUESTS:
      raise ValueError(f'max_batch_requests must be 1 to {MAX_BATCH_REQUESTS}')
    self.poll_interval, self.batch_attempts = poll_interval, batch_attempts
    self.max_batch_requests, self.max_batch_bytes = max_batch_requests, max_batch_bytes
    self.batches = client.client.messages.batches
    # Per batch id: its stage and custom_ids; "<id>/collected" once its results are in.
    self.records = KeyedJsonl(client.cache.path.parent / f'batches-{client.name}.jsonl')
    client.stats.update(
      batches_created=0,
      batches_reattached=0,
      batch_requests_sent=0,
      batch_errored=0,
      batch_expired=0,
      batch_canceled=0,
    )
    self._fetched: set[str] = set()  # request keys answered by this run's batches

  def run(self, task: Task):
    for _, result in self.run_many([task]):
      return result
    raise AssertionError('unreachable')

  # -- the stage ---------------------------------------------------------------------
  def run_many(self, tasks):
    tasks = list(tasks)
    if not tasks:
      return
    stage = '+'.join(sorted({t.level for t in tasks}))
    talks = {}  # task index -> (its dialogue, the request it waits on)
    for i, t in enumerate(tasks):
      talk = self.dialogue(t)
      talks[i] = (talk, next(talk))
    tries = collections.Counter()  # request key -> failed batch results
    lost: dict[int, str] = {}  # task index -> why it has no result
    while talks:
      waiting = collections.defaultdict(list)  # request key -> task indices
      bodies = {}
      for i in list(talks):
        state, value = self._advance(i, talks)
        if state == 'done':
          yield tasks[i], value
        elif state == 'lost':
          lost[i] = value
        else:
          waiting[value[0]].append(i)
          bodies[value[0]] = value[1]
      if not bodies:
        break
      for key, kind in self._round(stage, bodies).items():
        tries[key] += 1
        if kind == _PERMANENT or tries[key] >= self.batch_attempts:
          for i in waiting[key]:
            del talks[i]
            lost[i] = f'{kind} after {tries[key]} batch submission(s)'
    if lost:
      why = '; '.join(f'{n} {w}' for w, n in collections.Counter(lost.values()).most_common())
      raise GenerationError(
        f'{self.name} batch: {len(lost)} of {len(tasks)} {stage} tasks got no result ({why});'
        ' the finished ones are cached, so a rerun retries only these'
      )

  def _advance(self, task: int, talks: dict):
    """Feeds a task's dialogue the cached answers it has: ("done", result), ("lost", why) or
    ("ask", (key, body)) for the request it still needs."""
    talk, ask = talks[task]
    while True:
      body = self.client.body(*ask)
      key = self.client.request_key(body)
      hit = self.client.cache.get(key)
      if hit is None:
        talks[task] = (talk, ask)
        return 'ask', (key, body)
      if key not in self._fetched:
        self.client.stats['cache_hits'] += 1
      try:
        ask = talk.send(hit['text'])
      except StopIteration as done:
        del talks[task]
        return 'done', done.value
      except GenerationError as e:
        del talks[task]
        return 'lost', str(e)

  # -- one round of batches ----------------------------------------------------------
  def _round(self, stage: str, bodies: dict[str, dict]) -> dict[str, str]:
    """Gets `bodies` answered through batches; returns {key: failure} for those that were not."""
    open_ = [
      r
      for r in self.records.values()
      if 'custom_ids' in r and f'{r["key"]}/collected' not in self.records
    ]
    ids, covered = [], set()
    for r in open_:
      if not bodies.keys() & set(r['custom_ids']):
        continue
      log.info(
        '%s: re-attaching to batch %s (%d %s requests), recorded by an earlier run',
        self.name,
        r['key'],
        len(r['custom_ids']),
        r['stage'],
      )
      self.client.stats['batches_reattached'] += 1
      ids.append(r['key'])
      covered.update(r['custom_ids'])
    ids += self._submit(stage, {k: b for k, b in bodies.items() if k not in covered})
    self._wait(ids)
    failed = {}
    for bid in ids:
      failed.update(self._collect(bid))
    for key in bodies:
      if key not in self.client.cache and key not in failed:
        failed[key] = 'missing from the results'
    return {k: v for k, v in failed.items() if k in bodies}

  def _submit(self, stage: str, bodies: dict[str, dict]) -> list[str]:
    ids, chunk, size = [], [], _ENVELOPE_BYTES
    for key, body in bodies.items():
      req = {'custom_id': key, 'params': body}
      n = len(json.dumps(req, ensure_ascii=False).encode('utf-8')) + 2
      if chunk and (len(chunk) == self.max_batch_requests or size + n > self.max_batch_bytes):
        ids.append(self._create(stage, chunk))
        chunk, size = [], _ENVELOPE_BYTES
      chunk.append(req)
      size += n
    if chunk:
      ids.append(self._create(stage, chunk))
    return ids

  def _create(self, stage: str, requests: list[dict]) -> str:
    with self.client.sdk_errors():
      batch = self.batches.create(requests=requests)
    log.info('%s: created batch %s (%d %s requests)', self.name, batch.id, len(requests), stage)
    # Recorded before any polling, so a killed run's rerun re-attaches instead of resubmitting.
    self.records.put(
      batch.id,
      stage=stage,
      custom_ids=[r['custom_id'] for r in requests],
      created_at=batch.created_at.isoformat(),
    )
    self.client.stats['batches_created'] += 1
    self.client.stats['batch_requests_sent'] += len(requests)
    return batch.id

  def _wait(self, ids: list[str]):
    log.info(
      '%s: waiting on %d batch(es), polling every %gs', self.name, len(ids), self.poll_interval
    )
    pending = list(ids)
    while pending:
      for bid in list(pending):
        with self.client.sdk_errors():
          try:
            batch = self.batches.retrieve(bid)
          except self.client.sdk.NotFoundError:
            batch = None  # e.g. recorded against another base URL or account
        if batch is None:
          log.warning(
            '%s: batch %s is unknown to the server; its requests go again', self.name, bid
          )
          self.records.put(f'{bid}/collected', gone=True)
          pending.remove(bid)
          continue
        if batch.processing_status == 'ended':
          pending.remove(bid)
          log.info('%s: batch %s ended: %s', self.name, bid, batch.request_counts.to_dict())
      if pending:
        time.sleep(self.poll_interval)

  def _collect(self, bid: str) -> dict[str, str]:
    """Caches a finished batch's succeeded results; returns {key: failure} for the rest."""
    if f'{bid}/collected' in self.records:  # gone
      return {}
    failed, succeeded = {}, 0
    with self.client.sdk_errors():
      for line in self.batches.results(bid):
        key, result = line.custom_id, line.result
        if result.type == 'succeeded':
          try:
            text, n_in, n_out = self.client.extract(result.message)
          except _UNREADABLE as e:
            failed[key] = f'unreadable result ({type(e).__name__})'
            continue
          self.client.cache.put(
            key, text=text, input_tokens=n_in, output_tokens=n_out, model=self.model, batch=True
          )
          self._fetched.add(key)
          succeeded += 1
          continue
        self.client.stats[f'batch_{result.type}'] += 1
        if result.type == 'errored':
          err = result.error.error
          failed[key] = f'errored ({err.type})'
          if len(failed) <= _LOGGED_ERRORS:
            log.warning(
              '%s: batch %s: a request errored: %s: %s',
              self.name,
              bid,
              err.type,
              self.client._redact(str(err.message))[:300],
            )
        else:
          failed[key] = result.type
    if failed:
      kinds = collections.Counter(failed.values())
      log.warning(
        '%s: batch %s: %d succeeded, %s',
        self.name,
        bid,
        succeeded,
        ', '.join(f'{n} {k}' for k, n in kinds.most_common()),
      )
    self.records.put(f'{bid}/collected', succeeded=succeeded, failed=len(failed))
    return failed
