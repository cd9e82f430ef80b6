"""gs:// paths against a real GCS protocol server (gcp-storage-emulator, as tests/gcs_emulator.py
starts it, here on a free port): the path layer (mtspec.paths) on local and gs:// roots alike,
data sources, generated sets and caches on gs://, a missing bucket refused by name before any
work, and the quick toy experiment with its workdir on gs:// giving a local run's results.json."""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest
from conftest import ROOT

# what mtspec.paths derives from STORAGE_EMULATOR_HOST: never set by these tests themselves
DERIVED = (
  'GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT',
  'FSSPEC_GCS_TOKEN',
  'TENSORSTORE_GCS_HTTP_URL',
  'GOOGLE_AUTH_TOKEN_FOR_TESTING',
  'CLOUD_STORAGE_EMULATOR_ENDPOINT',
)
BASE_ENV = {k: v for k, v in os.environ.items() if k not in DERIVED + ('STORAGE_EMULATOR_HOST',)}
QUICK = ['-m', 'mtspec.toy', '--config=configs/cheese_toy.py:quick']


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _http(url: str, data: dict | None = None, timeout: float = 10) -> bytes:
  body = json.dumps(data).encode() if data is not None else None
  req = urllib.request.Request(url, body, {'Content-Type': 'application/json'} if body else {})
  with urllib.request.urlopen(req, timeout=timeout) as r:
    return r.read()


class Emulator:
  """The emulator's JSON API, used directly: checks that do not go through mtspec.paths."""

  def __init__(self, url: str):
    self.url = url

  def create_bucket(self, name: str) -> str:
    _http(f'{self.url}/storage/v1/b?project=test', {'name': name})
    return name

  def read(self, bucket: str, name: str) -> bytes:
    return _http(
      f'{self.url}/download/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe="")}?alt=media'
    )

  def names(self, bucket: str, prefix: str) -> list[str]:
    out, token = [], ''
    while True:
      q = urllib.parse.urlencode({'prefix': prefix, **({'pageToken': token} if token else {})})
      page = json.loads(_http(f'{self.url}/storage/v1/b/{bucket}/o?{q}'))
      out += [o['name'] for o in page.get('items', [])]
      token = page.get('nextPageToken')
      if not token:
        return out


@pytest.fixture(scope='module')
def emulator(tmp_path_factory):
  port = _free_port()
  log = open(tmp_path_factory.mktemp('emulator') / 'log', 'w+')  # a pipe could fill and block it
  proc = subprocess.Popen(  # gcp-storage-emulator, two of its gaps closed (gcs_emulator.py)
    [sys.executable, os.path.join(ROOT, 'tests', 'gcs_emulator.py'), str(port)],
    stdout=log,
    stderr=subprocess.STDOUT,
  )
  url = f'http://127.0.0.1:{port}'
  deadline = time.time() + 30
  while True:
    try:
      _http(f'{url}/storage/v1/b', timeout=2)
      break
    except (urllib.error.URLError, ConnectionError):
      assert proc.poll() is None, f'the emulator exited: {open(log.name).read()[-3000:]}'
      assert time.time() < deadline, 'the emulator did not answer within 30 s'
      time.sleep(0.2)
  yield Emulator(url)
  proc.terminate()
  try:
    proc.wait(timeout=10)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
  log.close()


@pytest.fixture(scope='module')
def gcs(emulator, tmp_path_factory):
  """This process pointed at the emulator as importing mtspec.paths would point it (its
  environment restored afterwards); yields a bucket."""
  saved = dict(os.environ)
  os.environ['STORAGE_EMULATOR_HOST'] = emulator.url
  os.environ['XDG_CACHE_HOME'] = str(tmp_path_factory.mktemp('cache'))  # local_state_dir's
  from mtspec import paths

  paths.configure_clients()
  try:
    yield emulator.create_bucket(f'mtspec-{uuid.uuid4().hex[:8]}')
  finally:
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(params=['local', 'gs'])
def root(request, gcs, tmp_path):
  return str(tmp_path) if request.param == 'local' else f'gs://{gcs}/{uuid.uuid4().hex[:8]}'


def test_files_round_trip(root):
  from mtspec import paths

  a, b = paths.join(root, 'dir', 'a.txt'), paths.join(root, 'dir', 'b.bin')
  assert not paths.exists(a)
  paths.write_text(a, 'héllo\n')
  paths.write_bytes(b, b'\x00\x01')
  assert paths.read_text(a) == 'héllo\n' and paths.read_bytes(b) == b'\x00\x01'
  paths.write_json(paths.join(root, 'c.json'), {'k': [1, 2]}, indent=2)
  assert paths.read_json(paths.join(root, 'c.json')) == {'k': [1, 2]}
  assert paths.exists(a) and paths.isdir(paths.join(root, 'dir'))
  assert not paths.isdir(a) and not paths.exists(paths.join(root, 'nothing'))
  assert paths.listdir(root) == ['c.json', 'dir']  # no temporary files left behind
  assert paths.glob(paths.join(root, 'dir'), '*.txt') == [a]
  with paths.open(a) as f:
    assert f.read() == 'héllo\n'
  assert paths.parent(a) == paths.join(root, 'dir') and paths.absolute(root) == root
  paths.remove(b)
  assert paths.listdir(paths.join(root, 'dir')) == ['a.txt']


def test_atomic_writes(root):
  from mtspec import paths

  target = paths.join(root, 'sub', 'out.json')
  paths.write_json(target, {'v': 1})
  paths.write_json(target, {'v': 2})  # replaces the whole file
  assert paths.read_json(target) == {'v': 2}
  with pytest.raises(RuntimeError), paths.local_file(target) as tmp:
    with open(tmp, 'w') as f:
      f.write('half')
    raise RuntimeError('killed mid-write')
  assert paths.read_json(target) == {'v': 2}  # an interrupted write changes nothing
  assert paths.listdir(paths.join(root, 'sub')) == ['out.json']
  with paths.local_file(paths.join(root, 'sub', 'new.bin')) as tmp:
    with open(tmp, 'wb') as f:
      f.write(b'whole')
    assert not paths.exists(paths.join(root, 'sub', 'new.bin'))  # absent until complete
  assert paths.read_bytes(paths.join(root, 'sub', 'new.bin')) == b'whole'


def test_appends(root):
  from mtspec import paths

  log = paths.join(root, 'log.jsonl')
  with paths.Appender(log, every_s=0) as ap:
    for i in range(3):
      ap.write(f'{i}\n')
      ap.flush()
  with paths.Appender(log, every_s=3600) as ap:  # a second run appends to the first's lines
    ap.write('3\n')
    ap.flush()
    ap.write('4\n')
    ap.flush()
    if paths.is_remote(root):  # kept until close: one write an hour at most, after the first
      assert paths.read_text(log) == '0\n1\n2\n3\n'
  assert paths.read_text(log) == '0\n1\n2\n3\n4\n'
  assert paths.listdir(root) == ['log.jsonl']  # the appended parts are gone


def test_copy_tree_and_local_copy(root, tmp_path):
  from mtspec import paths

  src = tmp_path / 'src'
  (src / 'sub').mkdir(parents=True)
  (src / 'sub' / 'x.bin').write_bytes(b'x')
  (src / 'info.json').write_text('{}')
  dst = paths.join(root, 'copy')
  paths.copy_tree(str(src), dst, last=('info.json',))
  assert paths.listdir(dst) == ['info.json', 'sub']
  assert paths.read_bytes(paths.join(dst, 'sub', 'x.bin')) == b'x'
  local = paths.local_copy(dst)
  assert open(os.path.join(local, 'sub', 'x.bin'), 'rb').read() == b'x'
  assert (local == dst) != paths.is_remote(root)


def test_gs_uris_stay_whole(gcs):
  from mtspec import paths

  uri = f'gs://{gcs}/w/trunk/checkpoints/40/'
  assert paths.parent(paths.parent(uri)) == f'gs://{gcs}/w/trunk'
  assert paths.join(f'gs://{gcs}/w', 'data') == f'gs://{gcs}/w/data'
  assert paths.absolute(f'gs://{gcs}/w') == f'gs://{gcs}/w'
  assert paths.bucket(uri) == gcs and paths.bucket('/tmp/x') == ''
  assert paths.local_state_dir(uri) != paths.local_state_dir(f'gs://{gcs}/other')
  assert os.path.isdir(paths.local_state_dir(uri))


def test_missing_bucket_named(gcs):
  from mtspec import paths

  paths.check_bucket(f'gs://{gcs}/anything')
  paths.check_bucket('/tmp/local/is/not/checked')
  with pytest.raises(FileNotFoundError, match='workdir gs://no-such-bucket-x/run: bucket '):
    paths.check_bucket('gs://no-such-bucket-x/run', 'workdir')


def test_sources_sets_and_caches_on_gs(gcs):
  import ml_collections

  from mtspec.data import sources
  from mtspec.data import tokenizer as tok_lib
  from mtspec.spec import sets
  from mtspec.spec.cache import KeyedJsonl

  out = f'gs://{gcs}/sets'
  recs = [{'text': f'document {i}'} for i in range(5)]
  entry = sets.write_set(out, 'documents', 'text', recs)
  sets.write_manifest(out, {'sets': {'documents': entry}})
  assert sets.load_records(f'{out}/{entry["path"]}') == recs
  assert sets.load_manifest(out)['sets']['documents']['count'] == 5
  assert sets.sources(out)['documents']['path'] == f'{out}/documents/documents.array_record'

  def src(uri, **kw):
    return sources.open_source('s', ml_collections.ConfigDict(dict(uri=uri, **kw)), '')

  ar = src(f'arrayrecord:{out}/documents')
  assert len(ar) == 5 and ar[3] == {'text': 'document 3'} and ar.manifest_hash()
  from mtspec import paths

  paths.write_text(f'gs://{gcs}/d.jsonl', '{"text": "a"}\n{"text": "b"}\n')
  assert src(f'jsonl:gs://{gcs}/d.jsonl')[1] == {'text': 'b'}

  cfg = ml_collections.ConfigDict(dict(uri='builtin:200'))
  built = sources.open_source('web', cfg, f'gs://{gcs}/tfds')  # built locally, copied up
  assert len(built) == 200 and built[0]['text']
  again = sources.open_source('web', cfg, f'gs://{gcs}/tfds')  # reused, not rebuilt
  assert again[7] == built[7] and again.manifest_hash() == built.manifest_hash()
  with pytest.raises(ValueError, match=f'no JSONL file at gs://{gcs}/missing.jsonl'):
    src(f'jsonl:gs://{gcs}/missing.jsonl')
  via_tfds = sources.open_source(
    'web', ml_collections.ConfigDict(dict(uri='tfds:mtspec_builtin/docs200')), f'gs://{gcs}/tfds'
  )
  assert via_tfds[7] == built[7]

  tok = tok_lib.train((r['text'] for r in built.get_many(range(200))), 512, f'gs://{gcs}/t.model')
  assert tok_lib.load(f'gs://{gcs}/t.model').encode('document') == tok.encode('document')

  cache = KeyedJsonl(f'gs://{gcs}/cache/levels.jsonl')
  cache.put('a', v=1)
  cache.put('b', v=2)
  cache.close()
  assert [e['v'] for e in KeyedJsonl(f'gs://{gcs}/cache/levels.jsonl').values()] == [1, 2]


HOLD = (
  'import sys, time; from mtspec import workdir\n'
  'with workdir.lock(sys.argv[1]):\n'
  '  print("held", flush=True); time.sleep(600)\n'
)


def test_gs_workdir_lock(gcs):
  from mtspec import workdir

  wd = f'gs://{gcs}/locked'
  proc = subprocess.Popen(
    [sys.executable, '-c', HOLD, wd],
    cwd=ROOT,
    stdout=subprocess.PIPE,
    text=True,
    env={**os.environ, 'PYTHONPATH': ROOT},
  )
  try:
    assert proc.stdout.readline().strip() == 'held'
    with pytest.raises(workdir.WorkdirInUse, match=f'workdir {wd} is in use by pid {proc.pid}'):
      with workdir.lock(wd):
        pass
  finally:
    proc.kill()
    proc.wait()
  with workdir.lock(wd):  # the holder is gone: the lock is free again
    pass


def _toy(workdir: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
  """The quick toy in a fresh process with exactly `env` (not this process's environment,
  which the gcs fixture points at the emulator)."""
  proc = subprocess.run(
    [sys.executable, *QUICK, f'--workdir={workdir}'],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=900,
  )
  if check:
    assert proc.returncode == 0, (
      f'exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}'
    )
  return proc


def _remote_env(emulator) -> dict:
  env = {**BASE_ENV, 'PYTHONPATH': ROOT, 'STORAGE_EMULATOR_HOST': emulator.url}
  assert not set(DERIVED) & set(env)  # the toy derives the rest itself
  return env


def test_toy_missing_bucket_refused_up_front(emulator):
  t = time.time()
  proc = _toy('gs://no-such-bucket-y/quick', _remote_env(emulator), check=False)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert 'bucket gs://no-such-bucket-y does not exist' in proc.stderr
  assert 'data: generating' not in proc.stdout  # refused before any work
  assert time.time() - t < 120
  assert not os.path.exists(os.path.join(ROOT, 'gs:'))


def test_quick_toy_on_gs_matches_local(emulator, tmp_path):
  """The quick experiment with its workdir on gs:// writes there, and only there, a
  results.json identical to a local run's."""
  bucket = emulator.create_bucket(f'toy-{uuid.uuid4().hex[:8]}')
  local = tmp_path / 'local'
  t0 = time.time()
  _toy(str(local), {**BASE_ENV, 'PYTHONPATH': ROOT})
  t1 = time.time()
  remote = f'gs://{bucket}/quick'
  out = _toy(remote, _remote_env(emulator)).stdout
  t2 = time.time()
  print(f'quick toy: local {t1 - t0:.0f} s, gs:// {t2 - t1:.0f} s')
  assert f'results: {remote}/results.json' in out
  assert emulator.read(bucket, 'quick/results.json') == (local / 'results.json').read_bytes()
  names = set(emulator.names(bucket, 'quick/'))
  for name in ('results.png', 'diagnostics.json', 'experiment.json', 'trunk/summary.json'):
    assert f'quick/{name}' in names
  assert any(n.startswith('quick/msm_a_s1/checkpoints/') for n in names)
  assert any(n.startswith('quick/data/mtspec_world/') for n in names)
  assert any(n.startswith('quick/trunk/metrics.jsonl') for n in names)
  assert not os.path.exists(os.path.join(ROOT, 'gs:'))  # no local folder named after the URI
  tree = json.loads(emulator.read(bucket, 'quick/experiment.json'))
  assert {r['final_checkpoint'].split('/checkpoints/')[0] for r in tree['runs']} == {
    f'{remote}/{r["name"]}' for r in tree['runs']
  }
  # the run's machine-local state (lock, compilation cache): under the toy's ~/.cache
  cache = BASE_ENV.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  state = os.path.join(cache, 'mtspec', 'remote', hashlib.sha256(remote.encode()).hexdigest()[:16])
  assert os.path.isdir(os.path.join(state, '.jax_cache'))
  shutil.rmtree(state)
