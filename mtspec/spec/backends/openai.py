"""OpenAI-compatible chat-completions client (POST {base}/chat/completions), through the
`openai` SDK.

The base URL includes the version path, as in the OpenAI SDK: https://api.openai.com/v1
by default, http://localhost:8000/v1 for a local vLLM server (which needs no key).
"""

from __future__ import annotations

import openai

from mtspec.spec.backends.http import HttpClient


class OpenAIClient(HttpClient):
  name = 'openai'
  key_env = 'OPENAI_API_KEY'
  url_env = 'MTSPEC_OPENAI_BASE_URL'
  default_url = 'https://api.openai.com/v1'
  default_model = 'gpt-4o-mini'
  key_required = False  # local servers run without one
  sdk = openai

  def make_client(self):
    # The SDK refuses an empty key; keyless servers (vLLM) accept any, as their docs show.
    return openai.OpenAI(
      api_key=self._key or 'EMPTY',
      base_url=self.base_url,
      max_retries=self.max_retries,
      timeout=self.timeout,
    )

  def body(self, system: str, prompt: str) -> dict:
    return {
      'model': self.model,
      'max_tokens': self.max_tokens,
      'temperature': self.temperature,
      'messages': [{'role': 'system', 'content': system}, {'role': 'user', 'content': prompt}],
    }

  def send(self, body: dict):
    return self.client.chat.completions.with_raw_response.create(**body)

  def extract(self, completion) -> tuple[str, int, int]:
    text = completion.choices[0].message.content
    if not isinstance(text, str):
      raise TypeError('message content is not a string')
    usage = completion.usage
    n_in = int(usage.prompt_tokens or 0) if usage else 0
    n_out = int(usage.completion_tokens or 0) if usage else 0
    return text, n_in, n_out
