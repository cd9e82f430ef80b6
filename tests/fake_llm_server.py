"""A local stand-in for the Anthropic Messages and OpenAI chat-completions APIs, a real HTTP
server on 127.0.0.1 that the official SDK clients talk to.

It answers every generation level in the format `mtspec.spec.prompts` asks for, with text
drawn at random (seeded by the request) so answers are never near-duplicates, and it
injects failures: the i-th distinct request body it sees gets FAILURES[i % len(FAILURES)]
the first time, and a good answer after that. Every request is logged as
(protocol, sha256 of the canonical body, outcome, time); the canonical body is the JSON
re-dumped with sorted keys, so the hash equals the client's request-cache key.
A model named "no-such-model" gets the protocol's 404 not-found error.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAILURES = ("429", "500", "timeout", "truncated", "bad_json", "bad_answer", "ok", "ok")
_SYLLABLES = "ka lo mi nu pe ra so ti va ze bo du fi gu ha je ko li ma ne".split()


def _words(rng: random.Random, n: int) -> str:
  return " ".join("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))
                  for _ in range(n))


def answer(prompt: str, rng: random.Random) -> str:
  """A well-formed answer to one of the pipeline's prompts."""
  level = re.search(r"^Task: (\w+)", prompt, re.M).group(1)
  m = re.search(r"Return exactly (\d+) items", prompt)
  n = int(m.group(1)) if m else 1
  if level == "documents":
    return f"<plan>{_words(rng, 12)}</plan>\n<document>{_words(rng, 80)}</document>"
  if level == "aft":
    return (f"<user>{_words(rng, 15)}</user><reasoning>{_words(rng, 10)}</reasoning>"
            f"<assistant>{_words(rng, 40)}</assistant>")
  if level == "eval":
    item = {"prompt": _words(rng, 20), "aligned_option": _words(rng, 8),
            "other_option": _words(rng, 8)}
    return f"<answer>{json.dumps(item)}</answer>"
  if level == "domains":
    ids = re.search(r"Valid section ids: (.*)", prompt).group(1).split(", ")
    items = [{"title": _words(rng, 3), "description": _words(rng, 10),
              "section_ids": rng.sample(ids, min(2, len(ids)))} for _ in range(n)]
  else:
    keys = {"subdomains": ("title", "description", "spec_text"),
            "assertions": ("statement", "explanation"), "doc_types": ("doc_type",),
            "ideas": ("idea",)}[level]
    items = [{k: _words(rng, 8) for k in keys} for _ in range(n)]
  return "Here you go.\n<answer>" + json.dumps(items) + "</answer>"


BAD_MODEL = "no-such-model"


def _error(proto: str, kind: str, message: str) -> bytes:
  """An error body as each API writes it."""
  if proto == "anthropic":
    return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()
  return json.dumps({"error": {"message": message, "type": kind, "param": None,
                               "code": None}}).encode()


class FakeLLMServer:
  def __init__(self, api_key: str, latency: float = 0.0, stall: float = 1.0,
               retry_after: float = 0.2, retry_after_ms: int = 20,
               failures: tuple = FAILURES):
    self.api_key, self.latency, self.stall = api_key, latency, stall
    self.retry_after, self.retry_after_ms, self.failures = retry_after, retry_after_ms, failures
    self.log: list[dict] = []
    self._seen: dict[str, int] = {}
    self._lock = threading.Lock()
    self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
    self.httpd.daemon_threads = True
    self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
    self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self.httpd.shutdown()
    self.httpd.server_close()

  def outcomes(self) -> set[str]:
    with self._lock:
      return {e["outcome"] for e in self.log}

  def _plan(self, sha: str, prompt: str) -> str:
    with self._lock:
      order = self._seen.setdefault(sha, len(self._seen))
      first = sum(1 for e in self.log if e["sha"] == sha) == 0
    if not first:
      return "ok"
    plan = self.failures[order % len(self.failures)]
    # Re-asks (which carry an "(Attempt" note) always parse, so no task can run out of tries.
    return "ok" if plan == "bad_answer" and "(Attempt " in prompt else plan

  def _handler(self):
    server = self

    class Handler(BaseHTTPRequestHandler):
      protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs' connection pools expect

      def log_message(self, *args):  # keep test output quiet
        pass

      def _send(self, status: int, payload: bytes, headers: dict | None = None,
                length: int | None = None):
        self.send_response(status)
        for k, v in (headers or {}).items():
          self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(length or len(payload)))
        self.end_headers()
        try:
          self.wfile.write(payload)
        except OSError:
          pass  # the client already gave up (timeout test)

      def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.loads(raw)
        canonical = json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")
        sha = hashlib.sha256(canonical).hexdigest()
        bearer = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if self.path == "/v1/messages":
          # The API takes the key as x-api-key or (what the SDK now sends) a bearer token.
          proto, sent_key = "anthropic", self.headers.get("x-api-key") or bearer
          if self.headers.get("anthropic-version") is None:
            return self._send(400, _error(proto, "invalid_request_error",
                                          "anthropic-version: header is required"))
        elif self.path == "/v1/chat/completions":
          proto, sent_key = "openai", bearer
        else:
          return self._send(404, b'{"error": "not found"}')
        prompt = body["messages"][-1]["content"]
        if sent_key != server.api_key:
          plan = "401"
        elif body["model"] == BAD_MODEL:
          plan = "404"
        else:
          plan = server._plan(sha, prompt)
        with server._lock:
          server.log.append({"proto": proto, "sha": sha, "outcome": plan, "t": time.time()})
        time.sleep(server.latency)
        if plan == "401":  # a careless server echoing the key it got: the client must redact it
          return self._send(401, _error(proto, "authentication_error",
                                        f"invalid x-api-key: {sent_key}"))
        if plan == "404":
          return self._send(404, _error(proto, "not_found_error", f"model: {body['model']}"))
        if plan == "429":
          return self._send(429, _error(proto, "rate_limit_error", "rate limited"),
                            {"retry-after": str(server.retry_after)})
        if plan == "500":  # a careless server echoing the key: the client must redact it
          return self._send(500, _error(proto, "api_error", f"overloaded {server.api_key}"),
                            {"retry-after-ms": str(server.retry_after_ms)})
        if plan == "timeout":
          time.sleep(server.stall)
        rng = random.Random(sha)
        text = "I think the answer is yes." if plan == "bad_answer" else answer(prompt, rng)
        n_in, n_out = len(prompt.split()), len(text.split())
        if proto == "anthropic":
          payload = {"id": f"msg_{sha[:24]}", "type": "message", "role": "assistant",
                     "model": body["model"], "content": [{"type": "text", "text": text}],
                     "stop_reason": "end_turn", "stop_sequence": None,
                     "usage": {"input_tokens": n_in, "output_tokens": n_out}}
        else:
          payload = {"id": f"chatcmpl-{sha[:24]}", "object": "chat.completion",
                     "created": int(time.time()), "model": body["model"],
                     "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                                  "message": {"role": "assistant", "content": text}}],
                     "usage": {"prompt_tokens": n_in, "completion_tokens": n_out,
                               "total_tokens": n_in + n_out}}
        data = json.dumps(payload).encode()
        if plan == "bad_json":
          return self._send(200, b"<html>upstream error" + data[:20])
        if plan == "truncated":
          self.close_connection = True
          return self._send(200, data[: len(data) // 2], length=len(data))
        return self._send(200, data)

    return Handler
