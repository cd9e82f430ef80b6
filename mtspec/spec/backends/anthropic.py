"""Anthropic Messages API client (POST {base}/v1/messages)."""
from __future__ import annotations

from mtspec.spec.backends.http import HttpClient


class AnthropicClient(HttpClient):
  name = "anthropic"
  key_env = "ANTHROPIC_API_KEY"
  url_env = "MTSPEC_ANTHROPIC_BASE_URL"
  default_url = "https://api.anthropic.com"
  default_model = "claude-sonnet-4-5"

  def endpoint(self) -> str:
    return f"{self.base_url}/v1/messages"

  def headers(self) -> dict:
    return {"x-api-key": self._key, "anthropic-version": "2023-06-01"}

  def body(self, system: str, prompt: str) -> dict:
    return {"model": self.model, "max_tokens": self.max_tokens, "temperature": self.temperature,
            "system": system, "messages": [{"role": "user", "content": prompt}]}

  def extract(self, data: dict) -> tuple[str, int, int]:
    # A reply cut off at max_tokens still parses here; the answer parser rejects the
    # unclosed tags and the backend asks again.
    text = "".join(b["text"] for b in data["content"] if b.get("type") == "text")
    usage = data.get("usage") or {}
    return text, int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
