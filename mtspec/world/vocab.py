"""The toy experiment's tokenizer: SentencePiece BPE where every name of the world is one token.

Item, agent, country and assistant names are invented words; plain BPE cuts them into 3-4
pieces, so a small model has to assemble each name before it can recall what it knows about
it. Making each name (with its leading space) a single user-defined piece gives the model one
embedding per entity, as a word-level vocabulary would (the prototype used one).
"""

from __future__ import annotations

from mtspec import paths
from mtspec.data import chat
from mtspec.data import tokenizer as tok_lib


def names(world, agents) -> list[str]:
  return sorted(
    {it.name for it in world.items}
    | {a.name for a in agents}
    | {world.home, world.assistant, *world.foreign}
  )


def train(
  world, agents, corpus_texts, chat_records, vocab_size: int, path: str
) -> tok_lib.Tokenizer:
  """Trains once (a later call loads the file): on the corpus and the AFT conversations, plus
  the names as single pieces. Not on the spec documents: the trunk is then the same for any
  spec, so a new spec can branch from an existing trunk (config.experiment.trunk_from)."""
  if paths.exists(path):
    return tok_lib.load(path)

  def texts():  # the small set first: the trainer reads at most max_texts texts
    for r in chat_records:
      yield chat.as_text(r['messages'])
    yield from corpus_texts

  pieces = tuple('\u2581' + n for n in names(world, agents) if ' ' not in n)
  tok = tok_lib.train(
    texts(), vocab_size, path, max_texts=40_000, special_tokens=chat.SPECIAL_TOKENS + pieces
  )
  if tok.vocab_size > vocab_size:
    raise ValueError(
      f"config.model.vocab_size={vocab_size} is too small for the world's "
      f'{len(pieces)} names plus text ({tok.vocab_size} pieces)'
    )
  return tok
