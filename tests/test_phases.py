"""Phase plans and block-deterministic mixing (issue: phases, mixtures, linked stages)."""

import collections
import json

import ml_collections
import numpy as np
import pytest

from configs import lm
from mtspec import config as config_lib
from mtspec import defaults, trainer
from mtspec.data import mixture


def word_source(path, word, n):
  with open(path, 'w') as f:
    for i in range(n):
      f.write(json.dumps({'text': f'{word} {word} {word} number {i}.'}) + '\n')
  return ml_collections.ConfigDict(dict(uri=f'jsonl:{path}', kind='text', text_key='text'))


def two_source_config(tmp_path, n_alpha=200, n_beta=200):
  c = lm.get_config('tiny')
  c.sources.alpha = word_source(tmp_path / 'alpha.jsonl', 'alpha', n_alpha)
  c.sources.beta = word_source(tmp_path / 'beta.jsonl', 'beta', n_beta)
  defaults.new_phase(c, 'one', 4, {'alpha': 1.0}, lr=1e-3)
  defaults.new_phase(c, 'two', 4, {'beta': 0.5, 'alpha': 0.5, 'web': 0.0}, lr=1e-3)
  c.phase_order = ('one', 'two')
  c.train.update(ckpt_every=100, log_every=1, batch_size=4, seq_len=32)
  return c


def test_block_shares_are_exact_per_block():
  mix = mixture.Mixture({'a': 0.9, 'b': 0.1}, block_size=100, seed=5)
  draws = [mix.locate(i) for i in range(1000)]
  for block in range(10):
    counts = collections.Counter(name for name, _ in draws[block * 100 : (block + 1) * 100])
    assert counts == {'a': 90, 'b': 10}
  # every source's k runs 0, 1, 2, ... with no gaps or repeats
  for name in ('a', 'b'):
    ks = sorted(k for n, k in draws if n == name)
    assert ks == list(range(len(ks)))
  odd = mixture.apportion({'a': 1, 'b': 1, 'c': 1}, 100)
  assert sum(odd.values()) == 100 and max(odd.values()) - min(odd.values()) == 1


def test_mixture_is_a_pure_function_of_the_index():
  a = mixture.Mixture({'x': 0.3, 'y': 0.7}, 64, seed=1)
  b = mixture.Mixture({'x': 0.3, 'y': 0.7}, 64, seed=1)
  idx = np.random.default_rng(0).integers(0, 10**6, 200)
  assert [a.locate(i) for i in idx] == [b.locate(i) for i in idx]
  c = mixture.Mixture({'x': 0.3, 'y': 0.7}, 64, seed=2)
  assert [a.locate(i) for i in range(64)] != [c.locate(i) for i in range(64)]


def _record_batches(monkeypatch):
  seen = []
  real = trainer.step_lib.make_train_step

  def recording(*args, **kwargs):
    step = real(*args, **kwargs)

    def wrapped(state, batch, *rest):
      seen.append(np.asarray(batch['tokens']))
      return step(state, batch, *rest)

    return wrapped

  monkeypatch.setattr(trainer.step_lib, 'make_train_step', recording)
  return seen


def _words(tok, tokens):
  return set(tok.decode(tokens.ravel()).replace('.', ' ').split())


def test_weights_switch_exactly_at_the_boundary(tmp_path, monkeypatch):
  seen = _record_batches(monkeypatch)
  c = two_source_config(tmp_path)
  result = trainer.train(c, str(tmp_path / 'run'), show_progress=False)
  assert result['step'] == 8 and len(seen) == 8
  from mtspec.data import tokenizer as tok_lib

  tok = tok_lib.load(str(tmp_path / 'run' / 'tokenizer.model'))
  for i, tokens in enumerate(seen):
    words = _words(tok, tokens)
    if i < 4:
      assert 'alpha' in words and 'beta' not in words, (i, words)
    else:
      assert 'beta' in words, (i, words)
  rows = [json.loads(l) for l in open(tmp_path / 'run' / 'metrics.jsonl')]
  assert [r['phase_index'] for r in rows] == [0, 0, 0, 0, 1, 1, 1, 1]
  assert sorted(p.name for p in (tmp_path / 'run' / 'phases').iterdir()) == ['one.json', 'two.json']


def test_editing_a_later_phase_changes_nothing_earlier(tmp_path, monkeypatch):
  seen = _record_batches(monkeypatch)
  c1 = two_source_config(tmp_path)
  trainer.train(c1, str(tmp_path / 'r1'), show_progress=False)
  first = list(seen)
  seen.clear()
  c2 = two_source_config(tmp_path)
  c2.phases.two.weights.alpha = 0.0  # a different later phase
  c2.phases.two.steps = 6
  trainer.train(c2, str(tmp_path / 'r2'), show_progress=False)
  for a, b in zip(first[:4], seen[:4]):
    np.testing.assert_array_equal(a, b)
  assert any((a != b).any() for a, b in zip(first[4:], seen[4:]))
  p1 = trainer.checkpoint_params(str(tmp_path / 'r1'), 4)
  p2 = trainer.checkpoint_params(str(tmp_path / 'r2'), 4)
  import jax

  jax.tree.map(np.testing.assert_array_equal, p1, p2)


def test_small_source_repeats_and_logs_epochs(tmp_path):
  c = two_source_config(tmp_path, n_alpha=3)
  c.phases.one.steps = 6
  result = trainer.train(c, str(tmp_path / 'run'), show_progress=False)
  assert result['step'] == 10  # did not stop when alpha ran out
  rows = [json.loads(l) for l in open(tmp_path / 'run' / 'metrics.jsonl')]
  assert rows[5]['epoch/alpha'] > 3  # 3 documents, read over and over


@pytest.mark.parametrize(
  'edit,match',
  [
    (
      lambda c: c.phases.one.weights.update(alpha=0.0),
      r'config.phases.one.weights=.*must sum to a positive number',
    ),
    (
      lambda c: c.phases.two.weights.update(gamma=1.0),
      r"config.phases.two.weights names unknown source 'gamma'",
    ),
    (lambda c: c.update(phase_order=('one', 'three')), r"config.phase_order names 'three'"),
    (lambda c: c.phases.one.update(steps=0), r'config.phases.one.steps=0'),
    (lambda c: c.phases.two.weights.update(beta=-1.0), r'config.phases.two.weights.beta=-1.0'),
  ],
)
def test_plan_errors_name_the_key(tmp_path, edit, match):
  c = two_source_config(tmp_path)
  edit(c)
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.validate(c, n_devices=1)


def test_empty_source_is_named(tmp_path):
  c = two_source_config(tmp_path, n_beta=0)
  with pytest.raises(ValueError, match='config.sources.beta.uri=.*is empty'):
    trainer.Run(c, str(tmp_path / 'run'))
