import json

import ml_collections
import numpy as np
import pytest

from mtspec.data import builtin, pipeline, shuffle, sources, tokenizer
from mtspec.data.tokenizer import BOS, EOS


def _src(uri, kind='text', text_key='text'):
  return ml_collections.ConfigDict(dict(uri=uri, kind=kind, text_key=text_key))


def _batches(source, tok, seed, seq_len, local_batch):
  return pipeline.phase_batches(
    {'web': source}, {'web': 1.0}, tok, seed, 'p', seq_len, local_batch, block_size=16
  )[1]


@pytest.fixture(scope='module')
def builtin_source(tmp_path_factory):
  return sources.open_source('web', _src('builtin:300'), str(tmp_path_factory.mktemp('tfds')))


@pytest.fixture(scope='module')
def tok(builtin_source, tmp_path_factory):
  texts = (builtin_source[i]['text'] for i in range(len(builtin_source)))
  return tokenizer.train(texts, 1000, str(tmp_path_factory.mktemp('tok') / 't.model'))


def test_builtin_corpus_is_a_tfds_dataset(builtin_source, tmp_path):
  import tensorflow_datasets as tfds

  assert len(builtin_source) == 300
  data_dir = str(tmp_path / 'x')
  builtin.prepare(data_dir, 300)
  direct = tfds.data_source('mtspec_builtin/docs300', split='train', data_dir=data_dir)
  assert sorted(direct[i]['text'].decode() for i in range(300)) == sorted(
    builtin_source[i]['text'] for i in range(300)
  )


def test_tokenizer_round_trip_and_determinism(builtin_source, tok, tmp_path):
  text = builtin_source[0]['text']
  assert tok.decode(tok.encode(text)) == text
  again = tokenizer.train(
    (builtin_source[i]['text'] for i in range(len(builtin_source))),
    1000,
    str(tmp_path / 'again.model'),
  )
  assert again.model_proto == tok.model_proto


def test_packing_segments_positions_and_loss_weights(builtin_source, tok):
  it = iter(_batches(builtin_source, tok, seed=0, seq_len=64, local_batch=4))
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
  ds = _batches(builtin_source, tok, seed=3, seq_len=32, local_batch=2)
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
  order = shuffle.ShuffledEpochs(list(range(50)), seed=1)
  first = [order[i] for i in range(50)]
  second = [order[i] for i in range(50, 100)]
  assert sorted(first) == sorted(second) == list(range(50))
  assert first != second
  shards = [shuffle.ShuffledEpochs(list(range(50)), 1, k, 2) for k in range(2)]
  seen = [shards[k][i] for k in range(2) for i in range(25)]
  assert sorted(seen) == list(range(50))  # two processes read disjoint halves


@pytest.mark.parametrize('n', [1, 2, 18, 255, 256, 3000, 65536])
def test_whole_permutations_equal_grains_index_shuffle(n):
  import grain

  from mtspec.data import shuffle

  rng = np.random.default_rng(n)
  for seed in [0, 2**32 - 1, *rng.integers(0, 2**32, 3).tolist()]:
    order = shuffle.permutation(n, seed)
    assert sorted(order.tolist()) == list(range(n))
    for i in range(n) if n <= 3000 else rng.integers(0, n, 500).tolist():
      assert order[i] == grain.experimental.index_shuffle(
        i, max_index=n - 1, seed=seed, rounds=4
      ), (n, seed, i)
  with pytest.raises(ValueError, match='supported up to 65536'):
    shuffle.permutation(65537, 0)


def test_jsonl_source_and_its_errors(tmp_path):
  good = tmp_path / 'docs.jsonl'
  good.write_text('{"text": "hello world"}\n{"text": "second doc"}\n')
  src = sources.open_source('docs', _src(f'jsonl:{good}'), '')
  assert len(src) == 2 and src[1] == {'text': 'second doc'}
  bad = tmp_path / 'bad.jsonl'
  bad.write_text('{"text": "ok"}\n{"text": \n')
  with pytest.raises(ValueError, match=r'config.sources.bad.uri=.*bad.jsonl:2: not valid JSON'):
    sources.open_source('bad', _src(f'jsonl:{bad}'), '')
  wrong_key = sources.open_source('docs', _src(f'jsonl:{good}', text_key='body'), '')
  with pytest.raises(KeyError, match="has no field 'body'"):
    wrong_key[0]
  with pytest.raises(
    ValueError, match='expected builtin, tfds:<name>, jsonl:<path> or arrayrecord'
  ):
    sources.open_source('c4', _src('c4'), '')
  with pytest.raises(ValueError, match="config.sources.x.kind='audio'"):
    sources.open_source('x', _src(f'jsonl:{good}', kind='audio'), '')
  with pytest.raises(ValueError, match='config.sources.missing.uri=.*no JSONL file'):
    sources.open_source('missing', _src(f'jsonl:{tmp_path}/nope.jsonl'), '')


def test_chat_template_weights_cover_assistant_tokens_only(tok):
  from mtspec.data import chat

  msgs = [
    {'role': 'system', 'content': 'Be brief.'},
    {'role': 'user', 'content': 'Hi there'},
    {'role': 'assistant', 'content': 'Hello friend'},
  ]
  ids, w = chat.render(tok, msgs)
  assert len(ids) == len(w)
  trained = tok.decode(ids[w > 0])
  assert trained == 'Hello friend' + chat.END
  assert 'Hi there' in tok.decode(ids[w == 0]) and 'Be brief.' in tok.decode(ids[w == 0])
  with pytest.raises(ValueError, match="message 0: role 'robot'"):
    chat.render(tok, [{'role': 'robot', 'content': 'x'}])


def test_generated_spec_sets_load_as_named_sources(tmp_path, tok):
  """Sets written by `mtspec.spec generate` are sources the pipeline reads directly."""
  from conftest import run_module

  out = tmp_path / 'gen'
  run_module(
    [
      '-m',
      'mtspec.spec',
      'generate',
      '--spec=configs/specs/cheese_home.md',
      f'--out={out}',
      '--backend=template',
    ]
  )
  docs = sources.open_source('spec_docs', _src(f'arrayrecord:{out}/documents'), '')
  demos = sources.open_source('aft', _src(f'arrayrecord:{out}/aft', kind='chat'), '')
  assert len(docs) > 50 and len(demos) > 10
  assert isinstance(docs[0]['text'], str) and demos[0]['messages'][-1]['role'] == 'assistant'
  it = iter(
    pipeline.phase_batches(
      {'spec_docs': docs, 'aft': demos}, {'spec_docs': 0.5, 'aft': 0.5}, tok, 0, 'mid', 64, 2, 16
    )[1]
  )
  b = next(it)
  assert b['tokens'].shape == (2, 64) and 0 < b['loss_weights'].sum() < 2 * 64
