"""Anthropic Messages API client (POST {base}/v1/messages), through the `anthropic` SDK."""

from __future__ import annotations

import anthropic

from mtspec.spec.backends.http import HttpClient


class AnthropicClient(HttpClient):
  name = 'anthropic'
  key_env = 'ANTHROPIC_API_KEY'
  url_env = 'MTSPEC_ANTHROPIC_BASE_URL'
  default_url = 'https://api.anthropic.com'
  default_model = 'claude-sonnet-4-5'
  sdk = anthropic

  def make_client(self):
    return anthropic.Anthropic(
      api_key=self._key, base_url=self.base_url, max_retries=self.max_retries, timeout=self.timeout
    )

  def body(self, system: str, prompt: str) -> dict:
    return {
      'model': self.model,
      'max_tokens': self.max_tokens,
      'temperature': self.temperature,
      'system': system,
      'messages': [{'role': 'user', 'content': prompt}],
    }

  def send(self, body: dict):
    fields = dict(body)
    # This SDK's create() has no temperature argument; extra_body sends it as before.
    temperature = fields.pop('temperature')
    return self.client.messages.with_raw_response.create(
      **fields, extra_body={'temperature': temperature}
    )

  def extract(self, message) -> tuple[str, int, int]:
    # A reply cut off at max_tokens still parses here; the answer parser rejects the
    # unclosed tags and the backend asks again.
    text = ''.join(b.text for b in message.content if b.type == 'text')
    usage = message.usage
    n_in = int(usage.input_tokens or 0) if usage else 0
    n_out = int(usage.output_tokens or 0) if usage else 0
    return text, n_in, n_out
