"""The grain pipeline: example index -> text -> tokens -> packed rows -> batches.

Which example sits at each position is a pure function of (seed, position): epoch e of a
source is its own permutation (grain's index_shuffle), so the data order never depends on
iterator state. Packing buffers across examples, so the iterator state is still saved with
every checkpoint.
"""

import grain
import numpy as np

from mtspec.data import chat
from mtspec.data.mixture import MixedSource
from mtspec.data.tokenizer import BOS, EOS


def tokenize_text(tokenizer, text: str) -> dict[str, np.ndarray]:
  if hasattr(tokenizer, 'render_document'):  # a Hugging Face tokenizer (mtspec.hf)
    return dict(zip(('tokens', 'weights'), tokenizer.render_document(text)))
  ids = np.asarray([BOS] + tokenizer.encode(text) + [EOS], np.int32)
  return {'tokens': ids, 'weights': np.ones(len(ids), np.float32)}


def tokenize_record(tokenizer, record: dict) -> dict[str, np.ndarray]:
  """A text document (loss everywhere) or a chat (loss on the assistant's tokens)."""
  if record['kind'] == 'chat':
    if hasattr(tokenizer, 'render_chat'):  # the model's own template (mtspec.hf)
      ids, weights = tokenizer.render_chat(record['messages'])
    else:
      ids, weights = chat.render(tokenizer, record['messages'])
    return {'tokens': ids, 'weights': weights}
  return tokenize_text(tokenizer, record['text'])


def to_training_rows(packed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Packed features -> model inputs with next-token targets.

  Position t predicts token t+1 only inside the same document; the loss weight of that
  prediction is the target token's weight (0 for padding and across document boundaries).
  """
  tokens, seg = packed['tokens'], packed['tokens_segment_ids']
  targets = np.zeros_like(tokens)
  targets[..., :-1] = tokens[..., 1:]
  same_doc = np.zeros(tokens.shape, bool)
  same_doc[..., :-1] = (seg[..., 1:] == seg[..., :-1]) & (seg[..., 1:] != 0)
  weights = np.zeros(tokens.shape, np.float32)
  weights[..., :-1] = packed['weights'][..., 1:]
  return {
    'tokens': tokens,
    'positions': packed['tokens_positions'],
    'segment_ids': seg,
    'targets': targets,
    'loss_weights': weights * same_doc,
  }


def packed_batches(
  examples: grain.MapDataset,
  seq_len: int,
  local_batch: int,
  num_threads: int = 2,
  prefetch: int = 4,
) -> grain.IterDataset:
  """Tokenized examples ({'tokens', 'weights'}) -> batches of training rows."""
  it = examples.to_iter_dataset(
    grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
  )
  it = grain.experimental.ConcatThenSplitIterDataset(
    it, length_struct={'tokens': seq_len, 'weights': seq_len}
  )
  return it.batch(local_batch, drop_remainder=True).map(to_training_rows)


def phase_batches(
  sources: dict,
  weights: dict,
  tokenizer,
  seed: int,
  phase: str,
  seq_len: int,
  local_batch: int,
  block_size: int,
  shard_index: int = 0,
  shard_count: int = 1,
  num_threads: int = 2,
  prefetch: int = 4,
):
  """(mixed source, batches) for one phase of the plan."""
  mixed = MixedSource(sources, weights, seed, phase, block_size, shard_index, shard_count)
  examples = grain.MapDataset.source(mixed).map(lambda r: tokenize_record(tokenizer, r))
  return mixed, packed_batches(examples, seq_len, local_batch, num_threads, prefetch)
