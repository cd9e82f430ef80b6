"""An append-only keyed JSONL file: the on-disk cache behind every generation level and
every HTTP request, so a killed run resumes without repeating or duplicating work."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from etils import epath

from mtspec import paths


class KeyedJsonl:
  """`{"key": ..., **fields}` per line; the first entry for a key wins.

  Each put is one flushed write, so a SIGKILL can at worst leave a torn last line,
  which `__init__` cuts off before appending again. On gs:// (paths.Appender) puts reach
  the object every few seconds, whole lines only: a kill loses those seconds' entries.
  """

  def __init__(self, path: str | Path):
    self.path = epath.Path(path)  # a gs:// URI stays whole, unlike in pathlib
    self._lock = threading.Lock()
    self._items: dict[str, dict] = {}
    if paths.exists(self.path):
      data = paths.read_bytes(self.path)
      good = data[: data.rfind(b'\n') + 1]  # drop a torn tail left by a kill
      if len(good) != len(data):
        with open(self.path, 'r+b') as f:  # only a local file can be torn
          f.truncate(len(good))
      for line in good.decode('utf-8').splitlines():
        entry = json.loads(line)
        self._items.setdefault(entry['key'], entry)
    self._f = paths.Appender(self.path)

  def __contains__(self, key: str) -> bool:
    return key in self._items

  def __len__(self) -> int:
    return len(self._items)

  def get(self, key: str) -> dict | None:
    return self._items.get(key)

  def values(self) -> list[dict]:
    return list(self._items.values())

  def put(self, key: str, **fields) -> dict:
    entry = {'key': key, **fields}
    line = json.dumps(entry, ensure_ascii=False, sort_keys=True) + '\n'
    with self._lock:
      if key in self._items:
        return self._items[key]
      self._f.write(line)
      self._f.flush()
      self._items[key] = entry
    return entry

  def close(self):
    self._f.close()
