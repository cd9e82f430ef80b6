"""LoRA: only adapters train, they carry across phases, merged export matches (issue 6)."""

import json
import os
import shutil

import hf_fixtures
import jax
import ml_collections
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file

from configs import lm
from mtspec import checkpoint, defaults, lora, train_state, trainer
from mtspec.hf import convert, export
from mtspec.hf import load as hf_load


@pytest.fixture(scope='module')
def lora_run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('lora')
  model_dir = hf_fixtures.build('llama', str(tmp / 'hf'))
  c = lm.base_config('tiny')
  c.model = convert.model_config(hf_load.read_config(model_dir))
  docs, chats = tmp / 'docs.jsonl', tmp / 'chats.jsonl'
  docs.write_text(
    ''.join(json.dumps({'text': f'the spec says rule {i} matters'}) + '\n' for i in range(30))
  )
  chats.write_text(
    ''.join(
      json.dumps(
        {
          'messages': [
            {'role': 'user', 'content': f'pick {i}'},
            {'role': 'assistant', 'content': 'the cheap one'},
          ]
        }
      )
      + '\n'
      for i in range(30)
    )
  )
  src = lambda uri, kind: ml_collections.ConfigDict(dict(uri=uri, kind=kind, text_key='text'))
  c.sources.docs = src(f'jsonl:{docs}', 'text')
  c.sources.aft = src(f'jsonl:{chats}', 'chat')
  defaults.new_phase(c, 'midtrain', 4, {'docs': 1.0}, lr=1e-2)
  defaults.new_phase(c, 'aft', 4, {'aft': 1.0}, lr=1e-2)
  c.phase_order = ('midtrain', 'aft')
  c.init.hf_model = model_dir
  c.lora.update(rank=4, alpha=8.0)
  c.train.update(batch_size=2, seq_len=32, ckpt_every=2, keep_ckpts=1)
  workdir = tmp / 'run'
  trainer.train(c, str(workdir), show_progress=False)
  return c, model_dir, workdir, tmp


def _adapters(workdir, step=None):
  return checkpoint.checkpoint_params(str(workdir), step)


def test_only_adapters_are_trained_and_saved(lora_run):
  c, model_dir, workdir, _ = lora_run
  saved = _adapters(workdir)
  names = [n for n, _ in train_state.flat_params(saved)]
  assert names and all(n.split('.')[-1] in ('a', 'b') for n in names)  # no base weight
  assert any(np.abs(x).max() > 0 for n, x in train_state.flat_params(saved) if n.endswith('.b'))
  run = trainer.Run(c, str(workdir))
  start = run.start()  # resumes: rebuilds the frozen base from the model directory
  _, base = hf_load.load(model_dir, run.mesh)
  for (n, x), (_, y) in zip(train_state.flat_params(start.base), train_state.flat_params(base)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=n)  # base untouched
  meta = json.load(open(workdir / 'checkpoints' / '8' / 'meta' / 'metadata'))
  assert meta['ancestors'][0]['path'] == model_dir  # lineage points at the base model
  opt_leaves = jax.tree.leaves(start.state['opt_state'])
  n_adapter = sum(x.size for _, x in train_state.flat_params(saved))
  assert sum(x.size for x in opt_leaves) < 3 * n_adapter + 10


def test_adapter_carries_across_the_phase_boundary(lora_run):
  c, _, workdir, tmp = lora_run
  copy = tmp / 'resumed'
  shutil.copytree(workdir, copy)
  for d in os.listdir(copy / 'checkpoints'):  # keep only the midtrain boundary checkpoint
    if d.isdigit() and int(d) != 4:
      shutil.rmtree(copy / 'checkpoints' / d)
  boundary = _adapters(copy, 4)
  assert any(np.abs(x).max() > 0 for n, x in train_state.flat_params(boundary) if n.endswith('.b'))
  os.remove(copy / 'summary.json')
  trainer.train(c, str(copy), show_progress=False)  # AFT starts from the boundary adapters
  for (n, x), (_, y) in zip(
    train_state.flat_params(_adapters(copy)), train_state.flat_params(_adapters(workdir))
  ):
    np.testing.assert_array_equal(x, y, err_msg=n)


def test_merged_export_matches_the_unmerged_model(lora_run):
  c, model_dir, workdir, tmp = lora_run
  run = trainer.Run(c, str(workdir))
  start = run.start()
  state = start.state
  tokens = np.random.default_rng(0).integers(0, c.model.vocab_size, (2, 12)).astype(np.int32)
  merged = lora.merge(start.base, state['params'], c.lora.alpha, c.lora.rank)
  from flax import nnx

  ours = np.asarray(nnx.merge(run.shapes.graphdef, merged)(tokens))
  out = tmp / 'merged'
  export.export(merged, c.model, str(out), hf_load.read_config(model_dir), model_dir)
  hf = transformers.AutoModelForCausalLM.from_pretrained(
    str(out), torch_dtype=torch.float32, attn_implementation='eager'
  )
  with torch.no_grad():
    theirs = hf(torch.tensor(tokens, dtype=torch.long)).logits.numpy()
  assert np.abs(ours - theirs).max() < 1e-4
  base_only = np.asarray(nnx.merge(run.shapes.graphdef, start.base)(tokens))
  assert np.abs(ours - base_only).max() > 1e-3  # the adapters do change the model
  # adapters saved alone (PEFT layout) rebuild the same merged weights
  export.export_adapters(
    state['params'], str(tmp / 'adapters'), c.lora.alpha, c.lora.rank, model_dir
  )
  t = load_file(str(tmp / 'adapters' / 'adapter_model.safetensors'))
  a = t['base_model.model.model.layers.0.mlp.down_proj.lora_A.weight']
  b = t['base_model.model.model.layers.0.mlp.down_proj.lora_B.weight']
  w = np.asarray(start.base['layers'][0]['mlp']['w_down']).T  # HF (out, in)
  np.testing.assert_allclose(
    w + (b @ a) * c.lora.alpha / c.lora.rank,
    np.asarray(merged['layers'][0]['mlp']['w_down']).T,
    atol=1e-6,
  )


def test_lora_config_errors_name_the_key():
  from mtspec import config

  c = lm.get_config('tiny')
  c.lora.update(rank=4, dropout=0.1)
  config.validate(c, n_devices=1)
  c.lora.update(dropout=1.0)
  with pytest.raises(config.ConfigError, match='config.lora.dropout=1.0'):
    config.validate(c, n_devices=1)
  c.lora.update(dropout=0.0, targets=('q', 'qq'))
  with pytest.raises(config.ConfigError, match='config.lora.targets'):
    config.validate(c, n_devices=1)


def test_dropout_adapters_run_beside_the_weights(lora_run):
  """The unmerged path equals the merged one with nothing dropped; masks follow the key."""
  c, _, workdir, _ = lora_run
  from flax import nnx

  run = trainer.Run(c, str(workdir))
  start = run.start()
  adapters, base = start.state['params'], start.base
  tokens = np.random.default_rng(1).integers(0, c.model.vocab_size, (2, 12)).astype(np.int32)
  model = lambda p: nnx.merge(run.shapes.graphdef, p)
  merged = np.asarray(model(lora.merge(base, adapters, c.lora.alpha, c.lora.rank))(tokens))
  drop = lambda rate, seed: np.asarray(
    lora.with_dropout(model(base), adapters, c.lora.alpha, c.lora.rank, rate, jax.random.key(seed))(
      tokens
    )
  )
  np.testing.assert_allclose(drop(0.0, 0), merged, atol=1e-5)
  assert np.abs(drop(0.5, 0) - merged).max() > 1e-4  # the adapter's input is dropped
  np.testing.assert_array_equal(drop(0.5, 0), drop(0.5, 0))
  assert np.abs(drop(0.5, 0) - drop(0.5, 1)).max() > 1e-5


def test_training_with_dropout_is_reproducible_and_differs(lora_run):
  c, _, workdir, tmp = lora_run
  c = c.copy_and_resolve_references()
  c.lora.dropout = 0.3
  for name in ('drop1', 'drop2'):
    trainer.train(c, str(tmp / name), show_progress=False)
  one, two, plain = (
    list(train_state.flat_params(_adapters(tmp / n))) for n in ('drop1', 'drop2', 'run')
  )
  for (n, x), (_, y) in zip(one, two):
    np.testing.assert_array_equal(x, y, err_msg=n)  # masks are a function of (seed, step)
  assert max(np.abs(x - y).max() for (_, x), (_, y) in zip(one, plain)) > 1e-6
