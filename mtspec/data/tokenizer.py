"""SentencePiece tokenizer: load one, or train one locally on the training text."""

import io

import sentencepiece as spm

from mtspec import paths

PAD, UNK, BOS, EOS = 0, 1, 2, 3


class Tokenizer:
  def __init__(self, model_proto: bytes, path: str = ''):
    self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
    self.model_proto = model_proto
    self.path = path

  @property
  def vocab_size(self) -> int:
    return self.sp.get_piece_size()

  def encode(self, text: str) -> list[int]:
    return self.sp.encode(text)

  def decode(self, ids) -> str:
    return self.sp.decode([int(i) for i in ids])


def load(path: str) -> Tokenizer:
  if not paths.exists(path):
    raise FileNotFoundError(f'data.tokenizer: no SentencePiece model at {path}')
  return Tokenizer(paths.read_bytes(path), path)  # bytes: SentencePiece opens local files only


def train(
  texts, vocab_size: int, out_path: str, max_texts: int = 20_000, special_tokens=()
) -> Tokenizer:
  """Trains a BPE model (byte fallback, fixed special ids) and writes it to out_path.

  Single-threaded and fed in a fixed order, so the same texts give the same model.
  """

  def sentences():
    for i, text in enumerate(texts):
      if i >= max_texts:
        return
      yield text

  buf = io.BytesIO()
  spm.SentencePieceTrainer.train(
    sentence_iterator=sentences(),
    model_writer=buf,
    vocab_size=vocab_size,
    model_type='bpe',
    byte_fallback=True,
    hard_vocab_limit=False,
    num_threads=1,
    pad_id=PAD,
    unk_id=UNK,
    bos_id=BOS,
    eos_id=EOS,
    character_coverage=1.0,
    split_digits=True,
    minloglevel=2,
    # Keep text exactly (newlines matter for chat templates and documents).
    normalization_rule_name='identity',
    remove_extra_whitespaces=False,
    user_defined_symbols=['\n', *special_tokens],
    allow_whitespace_only_pieces=True,
  )
  paths.write_bytes(out_path, buf.getvalue())  # atomic: a killed run never leaves half of it
  return Tokenizer(buf.getvalue(), out_path)
