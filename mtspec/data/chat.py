"""The built-in chat template for SentencePiece models, with assistant-only loss weights.

  <|system|>\n{content}<|end|>\n<|user|>\n{content}<|end|>\n<|assistant|>\n{content}<|end|>\n

The role markers are single tokens (user-defined symbols of the trained tokenizer). Loss falls
on the assistant's content and its closing <|end|>, so the model learns when to stop.
"""

import numpy as np

from mtspec.data.tokenizer import BOS, EOS

ROLES = {'system': '<|system|>', 'user': '<|user|>', 'assistant': '<|assistant|>'}
END = '<|end|>'
SPECIAL_TOKENS = tuple(ROLES.values()) + (END,)


def render(tokenizer, messages, add_generation_prompt: bool = False):
  """(token ids, per-token loss weights) of a conversation."""
  ids, weights = [BOS], [0.0]
  for i, m in enumerate(messages):
    role = m.get('role')
    if role not in ROLES:
      raise ValueError(f'message {i}: role {role!r} is not one of {sorted(ROLES)}')
    head = tokenizer.encode(ROLES[role] + '\n')
    body = tokenizer.encode(str(m.get('content', '')) + END)
    tail = tokenizer.encode('\n')
    w = 1.0 if role == 'assistant' else 0.0
    ids += head + body + tail
    weights += [0.0] * len(head) + [w] * len(body) + [0.0] * len(tail)
  if add_generation_prompt:
    head = tokenizer.encode(ROLES['assistant'] + '\n')
    ids += head
    weights += [0.0] * len(head)
  else:
    ids.append(EOS)
    weights.append(0.0)
  return np.asarray(ids, np.int32), np.asarray(weights, np.float32)


def as_text(messages) -> str:
  """The rendered conversation as text (to train the tokenizer on)."""
  return ''.join(f'{ROLES.get(m["role"], "")}\n{m.get("content", "")}{END}\n' for m in messages)
