"""Batch mode (the Anthropic Message Batches API) against the local fake server speaking the
batch protocol: the same sets as one-by-one mode, re-attaching to an in-flight batch after a
SIGKILL, retried and then reported failures, and no API key in anything written."""

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import sigkill_when
from fake_llm_server import BAD_MODEL, FakeLLMServer

from mtspec.spec import backends
from mtspec.spec.backends.base import GenerationError
from mtspec.spec.generate import Counts, generate
from mtspec.spec.parse import parse_file

ROOT = Path(__file__).resolve().parents[1]
KEY = 'sk-ant-batch-test-' + '5c1d8e4b' * 4
SPEC = ROOT / 'configs/specs/cheese_home.md'
SMALL = Counts(
  domains=2, subdomains=2, assertions=1, doc_types=2, ideas=1, docs_per_idea=1, aft=4, eval=4
)
# Tasks per stage for SMALL, in the order the pipeline runs them.
STAGES = {
  'domains': 1,
  'subdomains': 2,
  'assertions': 4,
  'doc_types': 4,
  'ideas': 8,
  'documents': 8,
  'aft': 4,
  'eval': 4,
}
FAST = dict(concurrency=4, timeout=5.0, backoff=0.01, max_retries=4)
BATCH = dict(FAST, batch=True, poll_interval=0.005, max_batch_requests=3)
SETS = ('documents', 'aft', 'eval')


def _env(monkeypatch, url):
  monkeypatch.setenv('ANTHROPIC_API_KEY', KEY)
  monkeypatch.setenv('MTSPEC_ANTHROPIC_BASE_URL', url)


def _outputs(out: Path) -> dict:
  return {name: (out / name / f'{name}.jsonl').read_bytes() for name in SETS}


def _cache(out: Path) -> dict:
  lines = (out / 'cache/requests-anthropic.jsonl').read_text().splitlines()
  return {e['key']: e for e in map(json.loads, lines)}


def _assert_key_absent(root: Path, *texts: str):
  files = [p for p in root.rglob('*') if p.is_file()]
  assert files
  for p in files:
    assert KEY.encode() not in p.read_bytes(), p
  for t in texts:
    assert KEY not in t


def _creations_per_stage(srv) -> dict:
  per = {}
  for c in srv.batch_creations():
    assert len(c['levels']) == 1, c['levels']  # a batch never mixes stages
    per[c['levels'][0]] = per.get(c['levels'][0], 0) + 1
  return per


def test_batch_mode_makes_the_same_sets_and_cache_as_one_by_one(tmp_path, monkeypatch):
  spec = parse_file(SPEC)
  with FakeLLMServer(KEY, failures=('ok',)) as srv:
    _env(monkeypatch, srv.url)
    single = backends.make('anthropic', tmp_path / 'one/cache', **FAST)
    m1 = generate(spec, tmp_path / 'one', single, SMALL)
    sent = len({e['sha'] for e in srv.log})  # distinct requests (a timed-out one is resent)
    batch = backends.make('anthropic', tmp_path / 'batch/cache', **BATCH)
    m2 = generate(spec, tmp_path / 'batch', batch, SMALL)
    assert _outputs(tmp_path / 'batch') == _outputs(tmp_path / 'one')
    # every stage went out as batches of at most 3 requests, each request once
    assert _creations_per_stage(srv) == {k: math.ceil(n / 3) for k, n in STAGES.items()}
    ids = [i for c in srv.batch_creations() for i in c['custom_ids']]
    assert len(ids) == len(set(ids)) == sent
    # the same request cache, under the same keys; batch entries are marked and half price
    one, two = _cache(tmp_path / 'one'), _cache(tmp_path / 'batch')
    assert one.keys() == two.keys() == set(ids)
    assert all(two[k]['text'] == one[k]['text'] and two[k]['batch'] for k in one)
    u1, u2 = m1['usage'], m2['usage']
    assert u2['batch_requests'] == u2['requests'] == u1['requests'] and u1['batch_requests'] == 0
    assert u2['input_tokens'] == u1['input_tokens']
    assert u2['cost_usd'] == pytest.approx(u1['cost_usd'] / 2, abs=1e-6)
    assert batch.client.stats['batch_requests_sent'] == sent

    # a batch-made cache serves one-by-one mode, and a one-by-one cache batch mode: no calls
    for out, mode in (('batch', FAST), ('one', BATCH)):
      before = (len(srv.log), len(srv.batch_log))
      (tmp_path / out / 'cache/levels.jsonl').unlink()
      generate(
        spec, tmp_path / out, backends.make('anthropic', tmp_path / out / 'cache', **mode), SMALL
      )
      assert (len(srv.log), len(srv.batch_log)) == before
      assert _outputs(tmp_path / out) == _outputs(tmp_path / 'one')


def _cmd(out: Path, counts: Counts) -> list[str]:
  return [
    sys.executable,
    '-m',
    'mtspec.spec',
    'generate',
    f'--spec={SPEC}',
    f'--out={out}',
    '--backend=anthropic',
    '--batch',
    '--poll-interval=0.02',
    '--max-batch-requests=4',
    *(f'--{k.replace("_", "-")}={v}' for k, v in vars(counts).items()),
  ]


def test_sigkill_while_a_batch_is_in_flight_then_rerun_reattaches(tmp_path, monkeypatch):
  out = tmp_path / 'out'
  records = out / 'cache/batches-anthropic.jsonl'
  with FakeLLMServer(KEY, batch_polls=10) as srv:
    env = dict(
      os.environ, ANTHROPIC_API_KEY=KEY, MTSPEC_ANTHROPIC_BASE_URL=srv.url, PYTHONPATH=str(ROOT)
    )
    proc = subprocess.Popen(
      _cmd(out, SMALL), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    in_flight = []

    def batch_recorded():
      if records.exists():
        in_flight[:] = [
          json.loads(l)['key']
          for l in records.read_text().splitlines()
          if '"stage": "doc_types"' in l
        ]
      return bool(in_flight)

    out1, err1 = sigkill_when(proc, batch_recorded, timeout=30)
    assert not (out / 'manifest.json').exists()
    assert srv.batches[in_flight[0]]['ended'] is None  # killed while the batch was processing

    r = subprocess.run(
      _cmd(out, SMALL), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert f're-attaching to batch {in_flight[0]}' in r.stderr
    # no request was submitted twice: each stage's batches were created once, the killed
    # stage's included
    assert _creations_per_stage(srv) == {k: math.ceil(n / 4) for k, n in STAGES.items()}
    ids = [i for c in srv.batch_creations() for i in c['custom_ids']]
    assert len(ids) == len(set(ids))

  with FakeLLMServer(KEY) as fresh:  # the same deterministic answers, uninterrupted
    _env(monkeypatch, fresh.url)
    generate(
      parse_file(SPEC),
      tmp_path / 'whole',
      backends.make('anthropic', tmp_path / 'whole/cache', **BATCH),
      SMALL,
    )
  assert _outputs(out) == _outputs(tmp_path / 'whole')
  assert 'documents: 8 text records' in r.stdout and '"batch_requests": ' in r.stdout
  _assert_key_absent(out, out1, err1, r.stdout, r.stderr)


def test_failed_batch_requests_are_retried_then_counted(tmp_path, monkeypatch, caplog):
  spec = parse_file(SPEC)
  kinds = ('errored', 'expired', 'canceled', 'overloaded', 'bad_answer', 'ok')
  with FakeLLMServer(
    KEY,
    batch_failures=kinds,
    http_failures={'create': [500, 429], 'retrieve': [500], 'results': [503]},
  ) as srv:
    _env(monkeypatch, srv.url)
    backend = backends.make('anthropic', tmp_path / 'cache', **BATCH)
    with caplog.at_level(logging.WARNING):
      m = generate(spec, tmp_path, backend, SMALL)
  assert {e['outcome'] for e in srv.log} == set(kinds)
  stats = backend.client.stats
  assert min(stats[f'batch_{k}'] for k in ('errored', 'expired', 'canceled')) > 0
  # each failed request went again in a later batch and then succeeded
  for e in srv.log:
    if e['outcome'] in ('errored', 'expired', 'canceled', 'overloaded'):
      later = [x['outcome'] for x in srv.log if x['sha'] == e['sha'] and x['t'] > e['t']]
      assert later == ['ok'], later
  assert [e['endpoint'] for e in srv.batch_log if e['op'] == 'injected'] == [
    'create',
    'create',
    'retrieve',
    'results',
  ]
  for name, want in (('documents', SMALL.documents()), ('aft', SMALL.aft), ('eval', SMALL.eval)):
    assert m['sets'][name]['count'] == want
  assert m['usage']['batch_requests'] == m['usage']['requests']
  assert '[redacted]' in caplog.text  # the errored results echoed the key
  _assert_key_absent(tmp_path, caplog.text, json.dumps(m))

  # a request that keeps erroring is resubmitted up to --batch-attempts times, then reported
  doomed, failing = set(), [True]

  def plan(prompt, sha, submission):
    if sha not in doomed and len(doomed) < 2 and 'Task: eval' in prompt:
      doomed.add(sha)
    return 'errored' if failing[0] and sha in doomed else 'ok'

  out = tmp_path / 'doomed'
  with FakeLLMServer(KEY, batch_plan=plan) as srv:
    _env(monkeypatch, srv.url)
    with pytest.raises(GenerationError) as e:
      generate(
        spec, out, backends.make('anthropic', out / 'cache', **BATCH, batch_attempts=3), SMALL
      )
    msg = str(e.value)
    assert 'batch: 2 of 4 eval tasks got no result (2 errored (api_error) after 3 batch' in msg
    assert [sum(x['sha'] == s for x in srv.log) for s in doomed] == [3, 3]
    assert not (out / 'manifest.json').exists()
    # the rest of the stage is cached: a rerun sends only the two failed requests
    mark, failing[0] = len(srv.log), False
    generate(spec, out, backends.make('anthropic', out / 'cache', **BATCH), SMALL)
    assert sorted(x['sha'] for x in srv.log[mark:]) == sorted(doomed)
  _assert_key_absent(out, msg)


def test_invalid_batch_request_is_not_resubmitted(tmp_path, monkeypatch):
  with FakeLLMServer(KEY) as srv:
    _env(monkeypatch, srv.url)
    backend = backends.make('anthropic', tmp_path / 'cache', model=BAD_MODEL, **BATCH)
    with pytest.raises(
      GenerationError,
      match=r'1 of 1 domains tasks got no result \(1 errored '
      r'\(invalid_request_error\) after 1 batch',
    ):
      generate(parse_file(SPEC), tmp_path, backend, SMALL)
  assert len(srv.batch_creations()) == 1 and len(srv.log) == 1


def test_batch_auth_error_never_shows_the_key(tmp_path, monkeypatch):
  with FakeLLMServer('a-different-key') as srv:
    _env(monkeypatch, srv.url)
    with pytest.raises(GenerationError) as e:
      generate(
        parse_file(SPEC), tmp_path, backends.make('anthropic', tmp_path / 'cache', **BATCH), SMALL
      )
  assert 'HTTP 401' in str(e.value) and '[redacted]' in str(e.value)
  assert not srv.batch_creations()
  _assert_key_absent(tmp_path, str(e.value))


def test_batch_needs_the_anthropic_backend(tmp_path):
  r = subprocess.run(
    [
      sys.executable,
      '-m',
      'mtspec.spec',
      'generate',
      f'--spec={SPEC}',
      f'--out={tmp_path}',
      '--backend=openai',
      '--batch',
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert r.returncode == 2 and '--batch needs --backend=anthropic' in r.stderr


def test_recorded_batch_unknown_to_the_server_is_submitted_again(tmp_path, monkeypatch, caplog):
  spec = parse_file(SPEC)
  with FakeLLMServer(KEY) as first:
    _env(monkeypatch, first.url)
    generate(spec, tmp_path / 'a', backends.make('anthropic', tmp_path / 'a/cache', **BATCH), SMALL)
  # the records of a run that was killed before it collected anything, now facing a server
  # that never saw those batches (another base URL or account)
  records = tmp_path / 'b/cache/batches-anthropic.jsonl'
  records.parent.mkdir(parents=True)
  lines = (tmp_path / 'a/cache/batches-anthropic.jsonl').read_text().splitlines()
  records.write_text(''.join(l + '\n' for l in lines if '/collected' not in l))
  with FakeLLMServer(KEY) as second:
    _env(monkeypatch, second.url)
    with caplog.at_level(logging.WARNING):
      generate(
        spec, tmp_path / 'b', backends.make('anthropic', tmp_path / 'b/cache', **BATCH), SMALL
      )
  assert 'is unknown to the server; its requests go again' in caplog.text
  assert _outputs(tmp_path / 'b') == _outputs(tmp_path / 'a')
