import json

import ml_collections
import numpy as np
import pytest

from mtspec.data import builtin, pipeline, sources, tokenizer
from mtspec.data.tokenizer import BOS, EOS


def _data_cfg(**kw):
  base = dict(source='builtin', builtin_docs=300, split='train', text_key='text')
  return ml_collections.ConfigDict({**base, **kw})


@pytest.fixture(scope='module')
def builtin_source(tmp_path_factory):
  return sources.open_text_source(_data_cfg(), str(tmp_path_factory.mktemp('tfds')))


@pytest.fixture(scope='module')
def tok(builtin_source, tmp_path_factory):
  texts = (builtin_source[i] for i in range(len(builtin_source)))
  return tokenizer.train(texts, 1000, str(tmp_path_factory.mktemp('tok') / 't.model'))


def test_builtin_corpus_is_a_tfds_dataset(builtin_source, tmp_path):
  import tensorflow_datasets as tfds
  assert len(builtin_source) == 300
  data_dir = str(tmp_path / 'x')
  builtin.prepare(data_dir, 300)
  direct = tfds.data_source('mtspec_builtin/docs300', split='train', data_dir=data_dir)
  assert sorted(direct[i]['text'] for i in range(300)) == sorted(
      builtin_source.records[i]['text'] for i in range(300))


def test_tokenizer_round_trip_and_determinism(builtin_source, tok, tmp_path):
  text = builtin_source[0]
  assert tok.decode(tok.encode(text)) == text
  again = tokenizer.train((builtin_source[i] for i in range(len(builtin_source))), 1000,
                          str(tmp_path / 'again.model'))
  assert again.model_proto == tok.model_proto


def test_packing_segments_positions_and_loss_weights(builtin_source, tok):
  it = iter(pipeline.text_batches(builtin_source, tok, seed=0, seq_len=64, local_batch=4))
  b = next(it)
  assert b['tokens'].shape == (4, 64) and b['tokens'].dtype == np.int32
  for row in range(4):
    seg, pos, w = b['segment_ids'][row], b['positions'][row], b['loss_weights'][row]
    for t in range(63):
      same = seg[t] == seg[t + 1] and seg[t + 1] != 0
      assert w[t] == (1.0 if same else 0.0)
      if same:
        assert pos[t + 1] == pos[t] + 1 and b['targets'][row, t] == b['tokens'][row, t + 1]
      elif seg[t + 1] != 0:
        assert pos[t + 1] == 0  # a new document starts at position 0
    assert w[63] == 0.0
  assert (b['tokens'] == BOS).any() and (b['tokens'] == EOS).any()
  assert b['segment_ids'].max() > 1  # several documents packed per row


def test_iterator_state_restores_exactly(builtin_source, tok):
  ds = pipeline.text_batches(builtin_source, tok, seed=3, seq_len=32, local_batch=2)
  it = iter(ds)
  for _ in range(5):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(3)]
  fresh = iter(ds)
  fresh.set_state(json.loads(json.dumps(state)))  # as it comes back from a checkpoint
  for want in expected:
    got = next(fresh)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])


def test_epochs_reshuffle_and_cover_every_example():
  order = pipeline.ShuffledEpochs(list(range(50)), seed=1)
  first = [order[i] for i in range(50)]
  second = [order[i] for i in range(50, 100)]
  assert sorted(first) == sorted(second) == list(range(50))
  assert first != second
  shards = [pipeline.ShuffledEpochs(list(range(50)), 1, k, 2) for k in range(2)]
  seen = [shards[k][i] for k in range(2) for i in range(25)]
  assert sorted(seen) == list(range(50))  # two processes read disjoint halves


def test_jsonl_source_and_its_errors(tmp_path):
  good = tmp_path / 'docs.jsonl'
  good.write_text('{"text": "hello world"}\n{"text": "second doc"}\n')
  src = sources.open_text_source(_data_cfg(source=f'jsonl:{good}'), '')
  assert len(src) == 2 and src[1] == 'second doc'
  bad = tmp_path / 'bad.jsonl'
  bad.write_text('{"text": "ok"}\n{"text": \n')
  with pytest.raises(ValueError, match=r'bad.jsonl:2: not valid JSON'):
    sources.open_text_source(_data_cfg(source=f'jsonl:{bad}'), '')
  wrong_key = sources.open_text_source(_data_cfg(source=f'jsonl:{good}', text_key='body'), '')
  with pytest.raises(KeyError, match="has no field 'body'"):
    wrong_key[0]
  with pytest.raises(ValueError, match="expected builtin, tfds:<name> or jsonl:<path>"):
    sources.open_text_source(_data_cfg(source='c4'), '')
  empty = tmp_path / 'empty.jsonl'
  empty.write_text('')
  with pytest.raises(ValueError, match='is empty'):
    sources.open_text_source(_data_cfg(source=f'jsonl:{empty}'), '')
