"""A run's data: its sources opened, its tokenizer, and each phase's batches for this process.

Opening a source may build it on disk and a run without a tokenizer trains one: `prepare`
does both on process 0 first, so shared files are written once.
"""

import jax

from mtspec import paths
from mtspec.data import chat, pipeline
from mtspec.data import sources as sources_lib
from mtspec.data import tokenizer as tok_lib
from mtspec.data.shards import ShardedBatches
from mtspec.errors import ConfigError


def used_sources(plan) -> list[str]:
  """The sources that some phase of the plan reads."""
  return sorted({name for p in plan for name in p.weights})


def open_sources(cfg, names, data_dir: str) -> dict:
  return {n: sources_lib.open_source(n, cfg.sources[n], data_dir) for n in names}


def tokenizer_texts(sources: dict, per_source: int = 5000):
  """Texts to train a tokenizer on: the first records of every source, rendered."""
  for src in sources.values():
    for i in range(min(len(src), per_source)):
      r = src[i]
      yield chat.as_text(r['messages']) if src.kind == 'chat' else r['text']


def load_or_train_tokenizer(cfg, workdir: str, sources: dict) -> tok_lib.Tokenizer:
  if cfg.init.get('hf_model'):  # a Hugging Face base model brings its tokenizer and template
    from mtspec.hf.tokenizer import HFTokenizer

    tok = HFTokenizer(cfg.init.hf_model)
    tok.path = cfg.init.hf_model
  elif cfg.data.tokenizer:
    tok = tok_lib.load(cfg.data.tokenizer)
  else:
    path = paths.join(workdir, 'tokenizer.model')
    tok = (
      tok_lib.load(path)
      if paths.exists(path)
      else tok_lib.train(
        tokenizer_texts(sources), cfg.model.vocab_size, path, special_tokens=chat.SPECIAL_TOKENS
      )
    )
  if tok.vocab_size > cfg.model.vocab_size:
    raise ConfigError(
      f'config.model.vocab_size={cfg.model.vocab_size} is smaller than the tokenizer '
      f'{tok.path} ({tok.vocab_size} pieces)'
    )
  return tok


def _primary_first(fn):
  """Runs fn on process 0, then on the others; returns this process's result."""
  if jax.process_count() == 1:
    return fn()
  from jax.experimental import multihost_utils

  result = fn() if jax.process_index() == 0 else None
  multihost_utils.sync_global_devices('mtspec: process 0 prepared data')
  return result if jax.process_index() == 0 else fn()


def prepare(cfg, workdir: str, plan) -> tuple[dict, tok_lib.Tokenizer]:
  """(the sources the plan reads, the tokenizer), built on disk once."""
  data_dir = cfg.data.tfds_data_dir or paths.join(workdir, 'data')
  paths.makedirs(workdir)

  def open_all():
    sources = open_sources(cfg, used_sources(plan), data_dir)
    return sources, load_or_train_tokenizer(cfg, workdir, sources)

  return _primary_first(open_all)


def phase_batches(cfg, sources: dict, tokenizer, phase) -> ShardedBatches:
  """This process's batches for a phase; each phase has its own example stream."""
  t, d = cfg.train, cfg.data
  n = d.num_shards or jax.process_count()
  if t.batch_size % n:
    raise ConfigError(
      f'config.train.batch_size={t.batch_size} must be a multiple of data.num_shards={n}'
    )

  def shard(s):
    mixed, batches = pipeline.phase_batches(
      sources,
      phase.weights,
      tokenizer,
      t.seed,
      phase.name,
      t.seq_len,
      t.batch_size // n,
      d.block_size,
      s,
      n,
      d.num_threads,
      d.prefetch,
    )
    return mixed, iter(batches)

  return ShardedBatches(shard, n, jax.process_index(), jax.process_count())
