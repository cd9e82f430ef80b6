"""A Hugging Face tokenizer and chat template through `transformers`, with assistant loss weights.

Chat rendering is transformers' `apply_chat_template`; which tokens are the assistant's:
  * If the template marks them with {% generation %}...{% endgeneration %}, transformers'
    `return_assistant_tokens_mask` says (weight 1 on every token overlapping a marked span).
  * Otherwise (Llama 3.x, Qwen2.5 and Qwen3 ship templates without the markers), for each
    assistant message i, render(messages[:i], add_generation_prompt=True) must be a prefix of
    render(messages[:i+1]), which must be a prefix of the full rendering; the text in between,
    trailing whitespace dropped, is the span: the message as the template writes it,
    end-of-turn marker included (so the model learns to stop). The same overlap rule turns
    spans into token weights. A template that rewrites earlier turns once later ones exist
    (Qwen3 dropping earlier <think> blocks) is not prefix-stable; that raises, names the
    message and the template, and asks for generation markers instead.
Documents for midtraining are plain text: no template, loss on every token.
"""

import re

import numpy as np
import transformers

from mtspec import paths

_GENERATION_TAG = re.compile(r'\{%-?\s*generation\s*-?%\}')


class HFTokenizer:
  def __init__(self, model_dir: str):
    if not paths.exists(paths.join(model_dir, 'tokenizer.json')):
      raise FileNotFoundError(
        f'no tokenizer.json in {model_dir}: a Hugging Face model '
        'directory needs tokenizer.json (and tokenizer_config.json)'
      )
    self.model_dir = model_dir
    # transformers reads a local directory: a gs:// one is copied to this machine first
    self.hf = transformers.AutoTokenizer.from_pretrained(paths.local_copy(model_dir))
    self.bos_id = self.hf.bos_token_id
    self.eos_id = self.hf.eos_token_id
    self.chat_template = self.hf.chat_template

  @property
  def vocab_size(self) -> int:
    return len(self.hf)  # added tokens included

  def encode(self, text: str) -> list[int]:
    return self.hf.encode(text, add_special_tokens=False)

  def decode(self, ids) -> str:
    # No clean-up of spaces, so decode(encode(text)) == text.
    return self.hf.decode(
      [int(i) for i in ids], skip_special_tokens=False, clean_up_tokenization_spaces=False
    )

  def render_document(self, text: str):
    """(ids, weights) of a plain-text document: [bos] text eos, loss on every token."""
    ids = [self.bos_id] * (self.bos_id is not None) + self.encode(text)
    ids += [self.eos_id] * (self.eos_id is not None)
    return np.asarray(ids, np.int32), np.ones(len(ids), np.float32)

  def _template(self) -> str:
    if self.chat_template is None:
      raise ValueError(
        f'no chat_template in {self.model_dir}/tokenizer_config.json or chat_template.jinja'
      )
    return self.hf.get_chat_template()

  def apply_chat_template(self, messages, add_generation_prompt: bool = False) -> str:
    self._template()
    return self.hf.apply_chat_template(
      messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )

  def render_chat(self, messages, add_generation_prompt: bool = False):
    """(ids int32, weights float32): weight 1 exactly on the assistant's tokens."""
    if _GENERATION_TAG.search(self._template()):
      out = self.hf.apply_chat_template(
        messages,
        tokenize=True,
        return_dict=True,
        add_generation_prompt=add_generation_prompt,
        return_assistant_tokens_mask=True,
      )
      return (
        np.asarray(out['input_ids'], np.int32),
        np.asarray(out['assistant_masks'], np.float32),
      )
    out = self.hf.apply_chat_template(
      messages,
      tokenize=True,
      return_dict=True,
      add_generation_prompt=add_generation_prompt,
      tokenizer_kwargs={'return_offsets_mapping': True},
    )
    full = self.apply_chat_template(messages, add_generation_prompt)
    spans = self._prefix_spans(messages, full)
    weights = [any(s < end and start < e for s, e in spans) for start, end in out['offset_mapping']]
    return np.asarray(out['input_ids'], np.int32), np.asarray(weights, np.float32)

  def _prefix_spans(self, messages, full: str) -> list[tuple[int, int]]:
    """The assistant messages' character spans, for templates without generation markers.

    Hand-written because transformers only masks assistant tokens through those markers.
    """
    spans = []
    for i, m in enumerate(messages):
      if m.get('role') != 'assistant':
        continue
      if i == 0:  # transformers renders no empty conversation, so there is no prefix to take
        raise ValueError(
          f'a chat that opens with an assistant message needs a chat template '
          f"with {{% generation %}} markers; {self.model_dir}'s has none"
        )
      before = self.apply_chat_template(messages[:i], add_generation_prompt=True)
      upto = self.apply_chat_template(messages[: i + 1])
      if not (upto.startswith(before) and full.startswith(upto)):
        raise ValueError(
          f'the chat template of {self.model_dir} is not prefix-stable at message {i}: '
          "cannot tell which tokens are the assistant's; wrap what the assistant writes "
          '(its content and end-of-turn marker) in {% generation %}...{% endgeneration %}'
        )
      spans.append((len(before), max(len(before), len(upto.rstrip()))))
    return spans
