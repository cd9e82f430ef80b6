"""A Hugging Face tokenizer (tokenizer.json), its Jinja chat template, assistant loss weights.

Chat rendering follows transformers' apply_chat_template: the template is rendered with the
same Jinja settings and special-token variables, then the text is tokenized whole, without
adding special tokens (the template writes them).

Which tokens are the assistant's:
  * If the template marks them with {% generation %}...{% endgeneration %} (the markers
    transformers' return_assistant_tokens_mask uses), the marked text is the span.
  * Otherwise, for each assistant message i, render(messages[:i], add_generation_prompt=True)
    must be a prefix of render(messages[:i+1]), which must be a prefix of the full rendering;
    the text in between, trailing whitespace dropped, is the span: the message as the template
    writes it, end-of-turn marker included (so the model learns to stop). A template that
    rewrites earlier turns once later ones exist (Qwen3 dropping earlier <think> blocks) is not
    prefix-stable; that raises and names the message, and needs generation markers instead.
A token gets weight 1 when it overlaps a span (transformers' rule), so a token that merges the
header with the first content characters counts as the assistant's.
Documents for midtraining are plain text: no template, loss on every token.
"""
import datetime
import json
import os

import jinja2
import jinja2.ext
import numpy as np
import tokenizers
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Private-use characters that bracket {% generation %} output while rendering.
_OPEN, _CLOSE = '\ue000', '\ue001'


class _Generation(jinja2.ext.Extension):
  tags = {'generation'}

  def parse(self, parser):
    lineno = next(parser.stream).lineno
    body = parser.parse_statements(['name:endgeneration'], drop_needle=True)
    return jinja2.nodes.CallBlock(self.call_method('_mark'), [], [], body).set_lineno(lineno)

  def _mark(self, caller):
    return _OPEN + caller() + _CLOSE


def _raise(message):
  raise jinja2.exceptions.TemplateError(message)


def _environment() -> jinja2.Environment:
  """The Jinja settings transformers uses for chat templates."""
  env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                      extensions=[_Generation, jinja2.ext.loopcontrols])
  # json.dumps rather than Jinja's tojson, which HTML-escapes.
  env.filters['tojson'] = lambda x, ensure_ascii=False, indent=None, separators=None, \
      sort_keys=False: json.dumps(x, ensure_ascii=ensure_ascii, indent=indent,
                                  separators=separators, sort_keys=sort_keys)
  env.globals['raise_exception'] = _raise
  env.globals['strftime_now'] = lambda fmt: datetime.datetime.now().strftime(fmt)
  return env


def _token_text(value):
  """tokenizer_config.json writes special tokens as strings or AddedToken dicts."""
  return value.get('content') if isinstance(value, dict) else value


def _chat_template(model_dir: str, config: dict) -> str | None:
  template = config.get('chat_template')
  if isinstance(template, list):  # named templates: take the default one
    template = {t['name']: t['template'] for t in template}.get('default')
  jinja_file = os.path.join(model_dir, 'chat_template.jinja')  # where transformers v5 saves it
  if template is None and os.path.exists(jinja_file):
    with open(jinja_file) as f:
      template = f.read()
  return template


def _strip_marks(marked: str) -> tuple[str, list[tuple[int, int]]]:
  """Removes the generation markers; returns the text and the marked character spans."""
  text, spans, start = [], [], None
  n = 0
  for ch in marked:
    if ch == _OPEN:
      start = n
    elif ch == _CLOSE:
      spans.append((start, n))
    else:
      text.append(ch)
      n += 1
  return ''.join(text), spans


class HFTokenizer:

  def __init__(self, model_dir: str):
    path = os.path.join(model_dir, 'tokenizer.json')
    if not os.path.exists(path):
      raise FileNotFoundError(f'no tokenizer.json in {model_dir}: a Hugging Face model '
                              'directory needs tokenizer.json (and tokenizer_config.json)')
    self.model_dir = model_dir
    self.tok = tokenizers.Tokenizer.from_file(path)
    config_path = os.path.join(model_dir, 'tokenizer_config.json')
    config = {}
    if os.path.exists(config_path):
      with open(config_path) as f:
        config = json.load(f)
    # The template sees these as variables (bos_token, eos_token, ...), as in transformers.
    self.special_tokens = {k: _token_text(v) for k, v in config.items()
                           if k.endswith('_token') and isinstance(_token_text(v), str)}
    self.bos_id = self._id(self.special_tokens.get('bos_token'))
    self.eos_id = self._id(self.special_tokens.get('eos_token'))
    self.chat_template = _chat_template(model_dir, config)
    self._template = _environment().from_string(self.chat_template) if self.chat_template else None

  def _id(self, token: str | None) -> int | None:
    return None if token is None else self.tok.token_to_id(token)

  @property
  def vocab_size(self) -> int:
    return self.tok.get_vocab_size()

  def encode(self, text: str) -> list[int]:
    return self.tok.encode(text, add_special_tokens=False).ids

  def decode(self, ids) -> str:
    return self.tok.decode([int(i) for i in ids], skip_special_tokens=False)

  def render_document(self, text: str):
    """(ids, weights) of a plain-text document: [bos] text eos, loss on every token."""
    ids = [self.bos_id] * (self.bos_id is not None) + self.encode(text)
    ids += [self.eos_id] * (self.eos_id is not None)
    return np.asarray(ids, np.int32), np.ones(len(ids), np.float32)

  def _render(self, messages, add_generation_prompt: bool = False) -> str:
    """The template's text, with generation markers still in it."""
    if self._template is None:
      raise ValueError(f'no chat_template in {self.model_dir}/tokenizer_config.json '
                       'or chat_template.jinja')
    messages = [{k: v for k, v in m.items() if v is not None} for m in messages]
    return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                 tools=None, documents=None, **self.special_tokens)

  def apply_chat_template(self, messages, add_generation_prompt: bool = False) -> str:
    return _strip_marks(self._render(messages, add_generation_prompt))[0]

  def _prefix_spans(self, messages, full: str) -> list[tuple[int, int]]:
    spans = []
    for i, m in enumerate(messages):
      if m.get('role') != 'assistant':
        continue
      before = self.apply_chat_template(messages[:i], add_generation_prompt=True)
      upto = self.apply_chat_template(messages[:i + 1])
      if not (upto.startswith(before) and full.startswith(upto)):
        raise ValueError(f'chat template of {self.model_dir} is not prefix-stable at message '
                         f'{i}: cannot tell which tokens are the assistant\'s; add '
                         '{% generation %} markers to the template')
      spans.append((len(before), max(len(before), len(upto.rstrip()))))
    return spans

  def render_chat(self, messages, add_generation_prompt: bool = False):
    """(ids int32, weights float32): weight 1 exactly on the assistant's tokens."""
    marked = self._render(messages, add_generation_prompt)
    text, spans = _strip_marks(marked)
    if _OPEN not in marked:
      spans = self._prefix_spans(messages, text)
    enc = self.tok.encode(text, add_special_tokens=False)
    weights = [any(s < end and start < e for s, e in spans) for start, end in enc.offsets]
    return np.asarray(enc.ids, np.int32), np.asarray(weights, np.float32)
