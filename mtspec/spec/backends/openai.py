"""OpenAI-compatible chat-completions client (POST {base}/chat/completions).

The base URL includes the version path, as in the OpenAI SDK: https://api.openai.com/v1
by default, http://localhost:8000/v1 for a local vLLM server (which needs no key).
"""
from __future__ import annotations

from mtspec.spec.backends.http import HttpClient


class OpenAIClient(HttpClient):
  name = "openai"
  key_env = "OPENAI_API_KEY"
  url_env = "MTSPEC_OPENAI_BASE_URL"
  default_url = "https://api.openai.com/v1"
  default_model = "gpt-4o-mini"
  key_required = False  # local servers run without one

  def endpoint(self) -> str:
    return f"{self.base_url}/chat/completions"

  def headers(self) -> dict:
    return {"authorization": f"Bearer {self._key}"} if self._key else {}

  def body(self, system: str, prompt: str) -> dict:
    return {"model": self.model, "max_tokens": self.max_tokens, "temperature": self.temperature,
            "messages": [{"role": "system", "content": system},
                         {"role": "user", "content": prompt}]}

  def extract(self, data: dict) -> tuple[str, int, int]:
    text = data["choices"][0]["message"]["content"]
    if not isinstance(text, str):
      raise TypeError("message content is not a string")
    usage = data.get("usage") or {}
    return text, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
