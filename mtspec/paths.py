"""One path layer: every file mtspec reads or writes may be a local path or a gs:// URI.

Built on etils.epath, which orbax and TFDS use too (gs:// through gcsfs); this module adds
only what epath lacks: atomic writes of small files, a local file to write through for
writers that need one (ArrayRecord, safetensors), appends (GCS objects cannot be appended
to), a local place for a remote path's machine-local state (locks, caches), a check that a
bucket exists, and the emulator set-up below.

Paths stay strings: `join`, `absolute` and `parent` keep os.path's spelling for local paths
and leave gs:// URIs whole (os.path.abspath and normpath would turn them into `gs:/...`).

With STORAGE_EMULATOR_HOST set (a GCS emulator, for tests), importing this module points
every GCS client mtspec uses at it, anonymously, unless the variable is already set:
each client finds an emulator its own way and otherwise looks for real credentials.
  GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false   gcsfs: no gRPC bucket-type probe (stalls ~170 s)
  FSSPEC_GCS_TOKEN=anon                    gcsfs (epath, orbax metadata, TFDS): no credentials
  TENSORSTORE_GCS_HTTP_URL=<host>          tensorstore (orbax's arrays) ignores the first one
  GOOGLE_AUTH_TOKEN_FOR_TESTING=dummy      tensorstore: no credentials lookup
  CLOUD_STORAGE_EMULATOR_ENDPOINT=<host>   array_record's GCS reader (google-cloud-cpp)
google-cloud-storage (tensorboardX's gs:// writer) reads STORAGE_EMULATOR_HOST itself.
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import hashlib
import json
import os
import posixpath
import tempfile
import time
import uuid

from etils import epath

SCHEMES = ('gs://', 's3://', 'az://', 'hf://')  # what epath reads besides local files


def configure_clients() -> None:
  """The set-up above; run on import, and again by a process that sets STORAGE_EMULATOR_HOST
  after importing this module (a test)."""
  import fsspec.config

  gcs = fsspec.config.conf.setdefault('gcs', {})
  # gcsfs caches directory listings forever: files that another process wrote (a lane's
  # summary, its checkpoints) would stay invisible to this one
  gcs.setdefault('use_listings_cache', False)
  host = os.environ.get('STORAGE_EMULATOR_HOST', '')
  if not host:
    return
  url = host if host.startswith(('http://', 'https://')) else f'http://{host}'
  os.environ['STORAGE_EMULATOR_HOST'] = url  # gcsfs adds the scheme, google-cloud-storage not
  derived = {
    'GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT': 'false',
    'FSSPEC_GCS_TOKEN': 'anon',
    'TENSORSTORE_GCS_HTTP_URL': url,
    'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'dummy',
    'CLOUD_STORAGE_EMULATOR_ENDPOINT': url,
  }
  for k, v in derived.items():
    os.environ.setdefault(k, v)  # child processes (lanes) inherit them
  gcs.setdefault('token', os.environ['FSSPEC_GCS_TOKEN'])  # read from the environment once


configure_clients()


def is_remote(path) -> bool:
  return str(path).startswith(SCHEMES)


def join(*parts) -> str:
  parts = [os.fspath(p) for p in parts]
  return posixpath.join(*parts) if is_remote(parts[0]) else os.path.join(*parts)


def absolute(p) -> str:
  """os.path.abspath for a local path; a URI as it is."""
  p = os.fspath(p)
  return p if is_remote(p) else os.path.abspath(p)


def parent(p) -> str:
  """The directory holding p (a trailing slash ignored)."""
  p = os.fspath(p)
  return str(epath.Path(p).parent) if is_remote(p) else os.path.dirname(os.path.normpath(p))


def exists(p) -> bool:
  return epath.Path(p).exists()


def isdir(p) -> bool:
  return epath.Path(p).is_dir()


def makedirs(p) -> None:
  """mkdir -p; nothing to do on GCS, where directories are only name prefixes."""
  if not is_remote(p):
    os.makedirs(p, exist_ok=True)


def listdir(p) -> list[str]:
  """The names in directory p, sorted."""
  return sorted(c.name for c in epath.Path(p).iterdir())


def glob(directory, pattern: str) -> list[str]:
  """The paths in `directory` matching `pattern` (one level: no **), sorted."""
  return sorted(str(c) for c in epath.Path(directory).glob(pattern))


def open(p, mode: str = 'r', **kwargs):  # noqa: A001 (the builtin's name and arguments)
  return epath.Path(p).open(mode, **kwargs)


def read_bytes(p) -> bytes:
  return epath.Path(p).read_bytes()


def read_text(p) -> str:
  return epath.Path(p).read_text(encoding='utf-8')


def read_json(p):
  return json.loads(read_text(p))


def remove(p, missing_ok: bool = True) -> None:
  epath.Path(p).unlink(missing_ok=missing_ok)


@contextlib.contextmanager
def local_file(p):
  """A local file to write `p` through, for writers that need a real file: moved into place
  when the block ends without an error (locally a rename, on GCS one upload: whole or absent
  for a reader either way), dropped otherwise."""
  p = os.fspath(p)
  if is_remote(p):
    with tempfile.TemporaryDirectory(prefix='mtspec_upload_') as tmp_dir:
      tmp = os.path.join(tmp_dir, posixpath.basename(p))
      yield tmp
      epath.Path(tmp).copy(p, overwrite=True)
    return
  d, base = os.path.split(p)
  makedirs(d or '.')
  tmp = os.path.join(d, f'.{base}.tmp')
  try:
    yield tmp
    os.replace(tmp, p)
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)


@contextlib.contextmanager
def fetched(p):
  """A local path holding file p, for readers that read a whole file through a local one: p
  itself when local, else a temporary copy (one download) removed after the block."""
  p = os.fspath(p)
  if not is_remote(p):
    yield p
    return
  with tempfile.TemporaryDirectory(prefix='mtspec_download_') as tmp_dir:
    tmp = os.path.join(tmp_dir, posixpath.basename(p))
    epath.Path(p).copy(tmp)
    yield tmp


def write_bytes(p, data: bytes) -> None:
  """Writes the whole file atomically: a reader sees the old file or the new one."""
  if is_remote(p):
    epath.Path(p).write_bytes(data)  # one object upload is atomic
    return
  with local_file(p) as tmp, builtins.open(tmp, 'wb') as f:
    f.write(data)


def write_text(p, text: str) -> None:
  write_bytes(p, text.encode('utf-8'))


def write_json(p, data, **dump_kwargs) -> None:
  """json.dumps(data, **dump_kwargs), written atomically."""
  write_text(p, json.dumps(data, **dump_kwargs))


def _files(d) -> list[str]:
  """Every file under directory d, relative to it, '/'-separated."""
  out = []
  for c in epath.Path(d).iterdir():
    out += [f'{c.name}/{f}' for f in _files(c)] if c.is_dir() else [c.name]
  return out


def copy_tree(src, dst, last=()) -> None:
  """Copies every file under directory src to dst (either may be local or remote), the files
  named in `last` after the rest, so that their presence means the copy is complete."""
  files = sorted(_files(src), key=lambda f: (posixpath.basename(f) in last, f))
  for f in files:
    target = join(dst, *f.split('/'))
    makedirs(parent(target))
    epath.Path(join(src, *f.split('/'))).copy(target, overwrite=True)


def local_copy(p) -> str:
  """p itself when local; a remote directory copied once to this machine (under
  local_state_dir(p)) for readers that need local files, e.g. memory-mapped safetensors."""
  p = os.fspath(p)
  if not is_remote(p):
    return p
  local = os.path.join(local_state_dir(p), 'copy')
  done = os.path.join(local_state_dir(p), 'copy.complete')
  if not os.path.exists(done):
    copy_tree(p, local)
    builtins.open(done, 'w').close()  # after every file: a killed copy starts again
  return local


class Appender:
  """Text appended to one file. Locally the file opened for appending: each flush reaches
  the file. On GCS, whose objects cannot be appended to and take about one write a second,
  the text is kept and added to the object (a compose) at most every `every_s` seconds and
  on close: a killed process loses at most those seconds' lines, never part of a line."""

  def __init__(self, p, every_s: float = 10.0):
    self.path, self.every_s = os.fspath(p), every_s
    self.remote = is_remote(self.path)
    self._pending, self._last = [], float('-inf')  # the first flush goes at once
    if self.remote:
      atexit.register(self.close)  # a normal exit sends what is pending
    else:
      makedirs(os.path.dirname(self.path) or '.')
      self._f = builtins.open(self.path, 'a', encoding='utf-8')

  def write(self, text: str) -> None:
    if self.remote:
      self._pending.append(text)
    else:
      self._f.write(text)

  def flush(self, force: bool = False) -> None:
    if not self.remote:
      self._f.flush()
      return
    if not self._pending or (not force and time.monotonic() - self._last < self.every_s):
      return
    data = ''.join(self._pending).encode('utf-8')
    self._append(data)
    self._pending, self._last = [], time.monotonic()

  def _append(self, data: bytes) -> None:
    import fsspec

    fs, key = fsspec.core.url_to_fs(self.path)
    if not fs.exists(key):
      fs.pipe_file(key, data)
      return
    part = f'{key}.append-{uuid.uuid4().hex}'
    fs.pipe_file(part, data)
    try:
      fs.merge(key, [key, part])  # GCS compose: the object becomes old + new
    finally:
      fs.rm_file(part)

  def close(self) -> None:
    if self.remote:
      atexit.unregister(self.close)
      self.flush(force=True)
    else:
      self._f.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def local_state_dir(p) -> str:
  """Where machine-local state of path p lives (a lock, a compilation cache): p itself when
  it is local; for a URI a local directory named by its hash, ~/.cache/mtspec/remote/<hash>
  ($XDG_CACHE_HOME honoured), with the URI written beside it in uri.txt."""
  p = os.fspath(p)
  if not is_remote(p):
    return p
  cache = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  d = os.path.join(cache, 'mtspec', 'remote', hashlib.sha256(p.encode()).hexdigest()[:16])
  os.makedirs(d, exist_ok=True)
  with builtins.open(os.path.join(d, 'uri.txt'), 'w') as f:
    f.write(p + '\n')
  return d


def bucket(p) -> str:
  """The bucket of a gs:// URI ('' for a local path)."""
  p = os.fspath(p)
  return p[len('gs://') :].split('/', 1)[0] if p.startswith('gs://') else ''


def check_bucket(p, what: str = 'path') -> None:
  """Raises FileNotFoundError, naming the bucket, when p is on GCS in a bucket that does not
  exist (or that these credentials cannot see): before any work that would fail later."""
  b = bucket(p)
  if b and not epath.Path(f'gs://{b}').exists():
    raise FileNotFoundError(
      f'{what} {p}: bucket gs://{b} does not exist or is not accessible '
      f'(create it with `gcloud storage buckets create gs://{b}`)'
    )
