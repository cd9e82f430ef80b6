"""gcp-storage-emulator, in memory, serving connections on threads: python gcs_emulator.py PORT

Two gaps of the emulator as shipped, closed here:
- it serves one connection at a time with a backlog of 5: clients that read and write in
  parallel (grain's ArrayRecord reads, tensorstore's checkpoint writes) find connections
  refused and back off for seconds. Here every connection gets a thread, and the emulator's
  request handlers still run one at a time (its storage is not thread-safe);
- its downloads lack the x-goog-generation header that GCS sends: tensorstore (orbax's
  arrays) keeps that generation to revalidate what it read, and without it fails with
  "Malformed StorageGeneration". Here downloads carry it.
"""

import contextlib
import http.server
import sys
import threading

from gcp_storage_emulator import server
from gcp_storage_emulator.handlers import objects


class _ThreadingServer(http.server.ThreadingHTTPServer):
  daemon_threads = True
  request_queue_size = 1024


def _one_at_a_time(handler, lock=threading.RLock()):
  def run(*args, **kwargs):
    with lock:
      return handler(*args, **kwargs)

  return run


def _with_generation(download):
  def run(request, response, storage, *args, **kwargs):
    download(request, response, storage, *args, **kwargs)
    with contextlib.suppress(Exception):  # a missing object: the 404 as it is
      obj = storage.get_file_obj(request.params['bucket_name'], request.params['object_id'])
      response['x-goog-generation'] = obj['generation']
      response['x-goog-metageneration'] = obj['metageneration']

  return run


def main(port: int):
  server.server.HTTPServer = _ThreadingServer  # the name the emulator's API thread builds
  download = objects.download
  objects.download = _with_generation(download)  # objects.get calls it for ?alt=media
  for _, handlers in server.HANDLERS:
    for method, handler in list(handlers.items()):
      if handler is download:
        handlers[method] = objects.download
  for _, handlers in server.HANDLERS:
    for method, handler in list(handlers.items()):
      handlers[method] = _one_at_a_time(handler)
  objects.insert = _one_at_a_time(objects.insert)  # the router's fallback for bare uploads
  server.create_server('127.0.0.1', port, in_memory=True).run()


if __name__ == '__main__':
  main(int(sys.argv[1]))
