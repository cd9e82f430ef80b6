"""HTTP backends (the official SDK clients) against a local server that speaks each protocol
and injects 429s with retry-after, 500s with retry-after-ms, timeouts, truncated and
unparseable bodies, and unparseable answers."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import sigkill_when
from fake_llm_server import BAD_MODEL, FAILURES, FakeLLMServer

from mtspec.spec import backends, sets
from mtspec.spec.backends.base import GenerationError
from mtspec.spec.generate import Counts, generate
from mtspec.spec.parse import parse_file

ROOT = Path(__file__).resolve().parents[1]
KEY = 'sk-mtspec-test-' + '7f3a9c2e' * 4
SMALL = Counts(
  domains=2, subdomains=2, assertions=1, doc_types=2, ideas=1, docs_per_idea=1, aft=4, eval=4
)
FAST = dict(concurrency=4, timeout=0.3, backoff=0.01, max_retries=8)


def _env(monkeypatch, proto, url):
  monkeypatch.setenv('ANTHROPIC_API_KEY', KEY)
  monkeypatch.setenv('OPENAI_API_KEY', KEY)
  monkeypatch.setenv(f'MTSPEC_{proto.upper()}_BASE_URL', url + ('/v1' if proto == 'openai' else ''))


def _assert_key_absent(root: Path, *texts: str):
  files = [p for p in root.rglob('*') if p.is_file()]
  assert files
  for p in files:
    assert KEY.encode() not in p.read_bytes(), p
  for t in texts:
    assert KEY not in t


def _jsonl_keys(path: Path) -> list[str]:
  keys = []
  for line in path.read_text().splitlines():
    try:
      keys.append(json.loads(line)['key'])
    except json.JSONDecodeError:
      pass  # a line torn by the kill
  return keys


def _assert_sets_complete(out: Path, counts: Counts):
  for name, want in (('documents', counts.documents()), ('aft', counts.aft), ('eval', counts.eval)):
    ids = [r['id'] for r in sets.load_records(out / f'{name}/{name}.array_record')]
    assert len(ids) == len(set(ids)) == want, name


@pytest.mark.parametrize('proto', ['anthropic', 'openai'])
def test_generation_survives_injected_failures(tmp_path, monkeypatch, caplog, proto):
  with FakeLLMServer(KEY, stall=0.6) as srv:
    _env(monkeypatch, proto, srv.url)
    backend = backends.make(proto, tmp_path / 'cache', **FAST)
    with caplog.at_level(logging.WARNING):
      manifest = generate(
        parse_file(ROOT / 'configs/specs/cheese_home.md'), tmp_path, backend, SMALL
      )
  assert srv.outcomes() >= set(FAILURES)  # every failure kind was exercised
  assert {e['proto'] for e in srv.log} == {proto}
  _assert_sets_complete(tmp_path, SMALL)
  # each task ran exactly once: one level-cache line per task, none repeated
  keys = _jsonl_keys(tmp_path / 'cache/levels.jsonl')
  assert len(keys) == len(set(keys)) == 1 + 2 + 4 + 4 + 8 + 8 + 4 + 4
  # retry-after (429) and retry-after-ms (500) were honoured: no retry came sooner than asked
  waits = {'429': srv.retry_after - 0.02, '500': srv.retry_after_ms / 1e3}
  for i, e in enumerate(srv.log):
    if e['outcome'] in waits:
      nxt = next(x for x in srv.log[i + 1 :] if x['sha'] == e['sha'])
      assert nxt['t'] - e['t'] >= waits[e['outcome']]
  usage = manifest['usage']
  assert usage['requests'] == len(_jsonl_keys(tmp_path / f'cache/requests-{proto}.jsonl'))
  assert usage['input_tokens'] > 0 and usage['output_tokens'] > 0 and usage['cost_usd'] > 0
  assert backend.client.stats['failed_attempts'] >= 5 and 'this_run' not in usage
  assert manifest['backend'] == proto and manifest['model'] == backend.model
  _assert_key_absent(tmp_path, caplog.text, json.dumps(manifest))


def test_request_cache_is_keyed_by_prompt_hash(tmp_path, monkeypatch):
  with FakeLLMServer(KEY, failures=('ok',)) as srv:
    _env(monkeypatch, 'openai', srv.url)
    spec = parse_file(ROOT / 'configs/specs/control.md')
    generate(spec, tmp_path, backends.make('openai', tmp_path / 'cache', **FAST), SMALL)
    outputs = lambda: {
      p.name: p.read_bytes() for p in tmp_path.glob('*/*.jsonl') if p.parent.name != 'cache'
    }
    first = outputs()
    assert len(first) == 3
    sent = len(srv.log)
    (tmp_path / 'cache/levels.jsonl').unlink()  # forget the levels, keep the request cache
    again = backends.make('openai', tmp_path / 'cache', **FAST)
    generate(spec, tmp_path, again, SMALL)
    assert len(srv.log) == sent  # nothing re-sent
    # one hit per distinct request (a request timed out and sent again is logged twice)
    assert again.client.stats['cache_hits'] == len({e['sha'] for e in srv.log})
    assert outputs() == first
  # the cache key is the hash of the request body as the SDK sent it
  assert {e['sha'] for e in srv.log} == set(_jsonl_keys(tmp_path / 'cache/requests-openai.jsonl'))


@pytest.mark.parametrize('proto', ['anthropic', 'openai'])
def test_auth_error_is_not_retried_and_never_shows_the_key(tmp_path, monkeypatch, proto):
  with FakeLLMServer('a-different-key') as srv:
    _env(monkeypatch, proto, srv.url)
    backend = backends.make(proto, tmp_path / 'cache', **FAST)
    with pytest.raises(GenerationError) as e:
      generate(parse_file(ROOT / 'configs/specs/control.md'), tmp_path, backend, SMALL)
  # the server echoed the key it got; the error shows it redacted
  assert 'HTTP 401' in str(e.value) and '[redacted]' in str(e.value)
  assert KEY not in str(e.value)
  assert len(srv.log) == 1


@pytest.mark.parametrize('proto', ['anthropic', 'openai'])
def test_unknown_model_is_not_retried_and_named(tmp_path, monkeypatch, proto):
  with FakeLLMServer(KEY) as srv:
    _env(monkeypatch, proto, srv.url)
    backend = backends.make(proto, tmp_path / 'cache', model=BAD_MODEL, **FAST)
    with pytest.raises(GenerationError) as e:
      generate(parse_file(ROOT / 'configs/specs/control.md'), tmp_path, backend, SMALL)
  assert f'{proto}: HTTP 404 from {srv.url}' in str(e.value) and BAD_MODEL in str(e.value)
  assert len(srv.log) == 1


def test_missing_key_is_an_error_naming_the_variable(tmp_path, monkeypatch):
  monkeypatch.delenv('ANTHROPIC_API_KEY', raising=False)
  with pytest.raises(GenerationError, match='ANTHROPIC_API_KEY is not set'):
    backends.make('anthropic', tmp_path)


def test_describe_hides_credentials_in_the_url(tmp_path, monkeypatch):
  monkeypatch.setenv('OPENAI_API_KEY', KEY)
  b = backends.make('openai', tmp_path, base_url='http://user:pw@example.test:8000/v1')
  assert b.describe()['base_url'] == 'http://example.test:8000/v1'


def test_sigkill_mid_generation_then_resume(tmp_path):
  out = tmp_path / 'out'
  counts = Counts(
    domains=2, subdomains=2, assertions=2, doc_types=2, ideas=2, docs_per_idea=1, aft=6, eval=6
  )
  with FakeLLMServer(KEY, latency=0.03, stall=0.6) as srv:
    env = dict(
      os.environ, OPENAI_API_KEY=KEY, MTSPEC_OPENAI_BASE_URL=srv.url + '/v1', PYTHONPATH=str(ROOT)
    )
    cmd = [
      sys.executable,
      '-m',
      'mtspec.spec',
      'generate',
      '--spec=configs/specs/general_assistant.md',
      f'--out={out}',
      '--backend=openai',
      '--concurrency=3',
      '--timeout=0.3',
      '--backoff=0.01',
      '--max-retries=8',
      *(f'--{k.replace("_", "-")}={v}' for k, v in vars(counts).items()),
    ]
    proc = subprocess.Popen(
      cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    req_cache = out / 'cache/requests-openai.jsonl'
    out1, err1 = sigkill_when(
      proc, lambda: req_cache.exists() and req_cache.read_text().count('\n') >= 25
    )
    assert not (out / 'manifest.json').exists()

    cached = set(_jsonl_keys(req_cache))
    mark = len(srv.log)
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    resent = {e['sha'] for e in srv.log[mark:]} & cached
    assert len(srv.log) > mark and not resent  # resumed, and no cached request re-sent
  _assert_sets_complete(out, counts)
  for cache in ('levels.jsonl', 'requests-openai.jsonl'):
    keys = _jsonl_keys(out / 'cache' / cache)
    assert len(keys) == len(set(keys)), cache
  assert 'documents: 32 text records' in r.stdout
  _assert_key_absent(out, out1, err1, r.stdout, r.stderr)
