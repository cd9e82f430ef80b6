"""Hugging Face import/export, tokenizer and chat template, checked against `transformers` itself.

Also a script: `python tests/test_hf.py REF.npz DIR...` imports onto a (2,2,2) mesh of 8
simulated CPU devices and prints shardings and logit differences as JSON (test 4 runs it).
"""

import json
import os
import re
import shutil
import sys

import hf_fixtures
import jax
import ml_dtypes
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from mtspec import sharding, train_state
from mtspec.hf import convert, export, load, tokenizer

TOKENS_BT = np.random.default_rng(0).integers(0, hf_fixtures.TINY['vocab_size'], (2, 24))
END = {'llama': '<|eot_id|>', 'qwen2': '<|im_end|>', 'qwen3': '<|im_end|>'}
CHATS = [
  [
    {'role': 'user', 'content': 'Which cheese is cheaper?'},
    {'role': 'assistant', 'content': 'The local cheddar, at 4 € — brûlée 🧀'},
    {'role': 'user', 'content': 'And the imported one?'},
    {'role': 'assistant', 'content': 'Gouda costs more.'},
  ],
  [
    {'role': 'system', 'content': 'You explain your reasons.'},
    {'role': 'user', 'content': 'Why?'},
    {'role': 'assistant', 'content': 'Because fair prices help everyone.'},
  ],
]


@pytest.fixture(scope='module')
def dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp('hf')
  return {f: hf_fixtures.build(f, str(root / f)) for f in hf_fixtures.FAMILIES}


def logits(cfg, params, tokens_BT=TOKENS_BT):
  graphdef = train_state.model_shapes(cfg).graphdef
  return np.asarray(jax.jit(lambda p, t: nnx.merge(graphdef, p)(t))(params, tokens_BT))


def max_diff(a, b) -> float:
  return float(np.abs(np.asarray(a) - np.asarray(b)).max())


@pytest.mark.parametrize('family', list(hf_fixtures.FAMILIES))
def test_import_matches_transformers(dirs, family):
  cfg, params = load.load(dirs[family], sharding.make_mesh((1, 1, 1)))
  assert (cfg.n_heads, cfg.n_kv_heads) == (4, 2)  # GQA
  assert cfg.tie_embeddings == (family == 'qwen2')
  assert ('lm_head' in params) == (not cfg.tie_embeddings)
  diff = max_diff(logits(cfg, params), hf_fixtures.hf_logits(dirs[family], TOKENS_BT))
  print(f'{family}: max |logits - transformers| = {diff:.2e}')
  assert diff < 1e-4


@pytest.mark.parametrize('family', list(hf_fixtures.FAMILIES))
def test_export_round_trip(dirs, family, tmp_path):
  mesh = sharding.make_mesh((1, 1, 1))
  cfg, params = load.load(dirs[family], mesh)
  out = str(tmp_path / 'export')
  export.export(
    params, cfg, out, base_config=load.read_config(dirs[family]), tokenizer_dir=dirs[family]
  )
  # Re-import is bitwise, and the written tensors are bitwise the original HF tensors.
  cfg2, params2 = load.load(out, mesh)
  assert cfg2 == cfg
  for (name, a), (_, b) in zip(train_state.flat_params(params), train_state.flat_params(params2)):
    assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b)), name
  written = load_file(os.path.join(out, 'model.safetensors'))
  original = load.tensor_files(dirs[family])
  assert set(written) == set(original) - ({'lm_head.weight'} if cfg.tie_embeddings else set())
  for name, x in written.items():
    assert np.array_equal(x, load_file(original[name])[name]), name
  diff = max_diff(hf_fixtures.hf_logits(out, TOKENS_BT), logits(cfg, params))
  assert diff < 1e-4
  copied, source = tokenizer.HFTokenizer(out), tokenizer.HFTokenizer(dirs[family])
  assert copied.chat_template == source.chat_template


def test_export_without_base_config_loads_in_transformers(dirs, tmp_path):
  cfg, params = load.load(dirs['qwen3'], sharding.make_mesh((1, 1, 1)))
  export.export(params, cfg, str(tmp_path))  # as for a model pretrained from scratch
  assert max_diff(hf_fixtures.hf_logits(str(tmp_path), TOKENS_BT), logits(cfg, params)) < 1e-4


def assistant_runs(tok, ids, weights) -> list[str]:
  """The text of each maximal run of weight-1 tokens."""
  edges = np.flatnonzero(np.diff(np.concatenate([[0], weights, [0]])))
  return [tok.decode(ids[a:b]) for a, b in zip(edges[::2], edges[1::2])]


def _copy(src: str, dst, edit=None, **config_changes) -> str:
  """A copy of a single-file model directory with config keys changed and tensors edited."""
  shutil.copytree(src, dst)
  config = {**load.read_config(dst), **config_changes}
  with open(os.path.join(dst, 'config.json'), 'w') as f:
    json.dump(config, f)
  if edit:
    path = os.path.join(dst, 'model.safetensors')
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={'format': 'pt'})
  return str(dst)


def test_bfloat16_checkpoint_imports_and_exports_exactly(dirs, tmp_path):
  to_bf16 = lambda t: t.update({k: v.astype(ml_dtypes.bfloat16) for k, v in t.items()})
  d = _copy(dirs['qwen2'], tmp_path / 'bf16', edit=to_bf16, dtype='bfloat16')
  bf16 = load_file(os.path.join(d, 'model.safetensors'))
  mesh = sharding.make_mesh((1, 1, 1))
  cfg, params = load.load(d, mesh)  # dtypes default to the checkpoint's
  assert (cfg.dtype, cfg.param_dtype, params['embed'].dtype) == ('bfloat16',) * 3
  cfg32, params32 = load.load(d, mesh, dtype='float32', param_dtype='float32')
  np.testing.assert_array_equal(
    np.asarray(params32['embed']), bf16['model.embed_tokens.weight'].astype(np.float32)
  )
  export.export(
    params32, cfg32, str(tmp_path / 'out'), base_config=load.read_config(d), dtype='bfloat16'
  )
  written = load_file(str(tmp_path / 'out' / 'model.safetensors'))
  assert all(x.dtype == bf16[k].dtype and np.array_equal(x, bf16[k]) for k, x in written.items())


def both_tokenizers(model_dir: str):
  """(transformers' AutoTokenizer, ours) for one directory."""
  from transformers import AutoTokenizer

  return AutoTokenizer.from_pretrained(model_dir), tokenizer.HFTokenizer(model_dir)


@pytest.mark.parametrize('family', list(hf_fixtures.FAMILIES))
def test_chat_template_matches_transformers(dirs, family):
  ref, tok = both_tokenizers(dirs[family])
  for chat in CHATS:
    for prompt in (False, True):
      ids, weights = tok.render_chat(chat, add_generation_prompt=prompt)
      want = ref.apply_chat_template(
        chat, tokenize=True, return_dict=False, add_generation_prompt=prompt
      )
      assert ids.tolist() == list(want)
      # Weight 1 on exactly the assistant turns (as the template writes them) + end marker.
      assert assistant_runs(tok, ids, weights) == [
        m['content'] + END[family] for m in chat if m['role'] == 'assistant'
      ]
      if '{% generation' in tok.chat_template.replace('{%-', '{%'):  # transformers' own mask
        masks = ref.apply_chat_template(
          chat,
          tokenize=True,
          return_dict=True,
          add_generation_prompt=prompt,
          return_assistant_tokens_mask=True,
        )['assistant_masks']
        assert weights.astype(int).tolist() == list(masks)


@pytest.mark.parametrize('family', list(hf_fixtures.FAMILIES))
def test_documents_are_plain_text(dirs, family):
  ref, tok = both_tokenizers(dirs[family])
  text = 'The cheese shop sells brie. Café!'
  ids, weights = tok.render_document(text)
  body = ref.encode(text, add_special_tokens=False)
  bos = [ref.bos_token_id] if ref.bos_token_id is not None else []
  assert ids.tolist() == bos + body + [ref.eos_token_id]
  assert weights.tolist() == [1.0] * len(ids)
  assert tok.decode(tok.encode(text)) == text


def test_template_without_markers_that_rewrites_history_is_refused(dirs, tmp_path):
  # Drops earlier assistant turns, as Qwen3 drops earlier <think> blocks: not prefix-stable.
  d = str(tmp_path / 'tok')
  os.makedirs(d)
  for name in ('tokenizer.json', 'tokenizer_config.json'):
    shutil.copy(os.path.join(dirs['qwen2'], name), d)
  with open(os.path.join(d, 'tokenizer_config.json')) as f:
    config = json.load(f)
  config['chat_template'] = (
    "{%- for m in messages %}{%- if m.role != 'assistant' or loop.last %}"
    "{{- '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' }}"
    '{%- endif %}{%- endfor %}'
  )
  with open(os.path.join(d, 'tokenizer_config.json'), 'w') as f:
    json.dump(config, f)
  with pytest.raises(ValueError, match='not prefix-stable at message 1') as e:
    tokenizer.HFTokenizer(d).render_chat(CHATS[0])
  assert d in str(e.value) and '{% generation %}' in str(e.value)


def sharded_check(ref_path: str, model_dirs: list[str]) -> dict:
  """Runs with 8 simulated devices: import onto (data, fsdp, tensor) = (2, 2, 2)."""
  mesh = sharding.make_mesh((2, 2, 2))
  refs, report = np.load(ref_path), {}
  for model_dir in model_dirs:
    cfg, params = load.load(model_dir, mesh)
    want = train_state.param_shardings(mesh, train_state.model_shapes(cfg))
    mismatched = [
      name
      for (name, a), (_, s) in zip(train_state.flat_params(params), train_state.flat_params(want))
      if a.sharding != s
    ]
    wq = params['layers'][0]['attn']['wq']
    with jax.set_mesh(mesh):
      out = logits(cfg, params, refs['tokens'])
    report[os.path.basename(model_dir)] = {
      'mismatched': mismatched,
      'wq_spec': list(wq.sharding.spec),
      'wq_shard_shapes': sorted({tuple(s.data.shape) for s in wq.addressable_shards}),
      'max_diff': max_diff(out, refs[os.path.basename(model_dir)]),
    }
  return report


def test_import_onto_8_device_mesh(dirs, tmp_path):
  from conftest import run_module

  ref_path = str(tmp_path / 'ref.npz')
  np.savez(
    ref_path, tokens=TOKENS_BT, **{f: hf_fixtures.hf_logits(d, TOKENS_BT) for f, d in dirs.items()}
  )
  out = run_module(
    ['tests/test_hf.py', ref_path, *dirs.values()],
    env={'XLA_FLAGS': '--xla_force_host_platform_device_count=8', 'JAX_PLATFORMS': 'cpu'},
  )
  report = json.loads(out.stdout.strip().splitlines()[-1])
  for family, r in report.items():
    assert r['mismatched'] == [], family
    assert r['wq_spec'] == ['fsdp', 'tensor', None], family
    H = 32 if family == 'qwen3' else 16
    assert r['wq_shard_shapes'] == [[32, 2, H]], family  # (D/fsdp, N/tensor, H)
    assert r['max_diff'] < 1e-4, (family, r['max_diff'])


# --- errors name the problem ---------------------------------------------------------------


def load_error(model_dir: str) -> str:
  with pytest.raises(convert.HFConversionError) as e:
    load.load(model_dir, sharding.make_mesh((1, 1, 1)))
  return str(e.value)


def test_unsupported_architecture_is_named(dirs, tmp_path):
  msg = load_error(_copy(dirs['llama'], tmp_path / 'm', architectures=['MistralForCausalLM']))
  assert 'MistralForCausalLM' in msg
  assert all(arch in msg for arch in convert.ARCHITECTURES)


@pytest.mark.parametrize(
  'change,named',
  [
    ({'rope_parameters': {'rope_type': 'yarn', 'rope_theta': 5e5, 'factor': 8.0}}, 'yarn'),
    ({'attention_bias': True}, 'attention_bias'),
    ({'hidden_act': 'gelu'}, 'hidden_act'),
  ],
)
def test_unsupported_options_are_named(dirs, tmp_path, change, named):
  assert named in load_error(_copy(dirs['llama'], tmp_path / 'm', **change))


def test_missing_tensor_is_named(dirs, tmp_path):
  d = _copy(
    dirs['qwen2'], tmp_path / 'm', edit=lambda t: t.pop('model.layers.1.mlp.up_proj.weight')
  )
  msg = load_error(d)
  assert 'model.layers.1.mlp.up_proj.weight' in msg and 'layers.1.mlp.w_up' in msg
  assert 'model.safetensors' in msg and d in msg


def test_tensor_mtspec_cannot_represent_is_named(dirs, tmp_path):
  add_bias = lambda t: t.update({'model.layers.0.self_attn.o_proj.bias': np.zeros(64, np.float32)})
  assert 'o_proj.bias' in load_error(_copy(dirs['qwen2'], tmp_path / 'm', edit=add_bias))


def test_shape_mismatch_names_parameter_and_shapes(dirs, tmp_path):
  msg = load_error(_copy(dirs['qwen2'], tmp_path / 'm', intermediate_size=96))
  assert re.search(r'parameter layers\.\d+\.mlp\.w_(gate|up|down)\b', msg), msg
  # The HF shape the config implies and the one in the file.
  assert re.search(r'\((64, 96|96, 64)\).*\((64, 128|128, 64)\)', msg), msg


def test_absent_tokenizer_names_directory(tmp_path):
  with pytest.raises(FileNotFoundError) as e:
    tokenizer.HFTokenizer(str(tmp_path))
  assert str(tmp_path) in str(e.value) and 'tokenizer.json' in str(e.value)


if __name__ == '__main__':
  assert jax.device_count() == 8, jax.device_count()
  print(json.dumps(sharded_check(sys.argv[1], sys.argv[2:])))


def test_training_starts_from_a_hugging_face_model(tmp_path):
  """init.hf_model: step 0 holds the imported weights exactly; chat data uses its template."""
  import json as _json

  import hf_fixtures
  import ml_collections

  from configs import lm
  from mtspec import defaults, trainer
  from mtspec.hf import convert
  from mtspec.hf import load as hf_load

  model_dir = hf_fixtures.build('llama', str(tmp_path / 'hf'))
  c = lm.base_config('tiny')
  c.model = convert.model_config(hf_load.read_config(model_dir))
  chats = tmp_path / 'chats.jsonl'
  chats.write_text(
    ''.join(
      _json.dumps(
        {
          'messages': [
            {'role': 'user', 'content': f'hello {i}'},
            {'role': 'assistant', 'content': 'hi there'},
          ]
        }
      )
      + '\n'
      for i in range(20)
    )
  )
  c.sources.aft = ml_collections.ConfigDict(
    dict(uri=f'jsonl:{chats}', kind='chat', text_key='text')
  )
  defaults.new_phase(c, 'aft', 2, {'aft': 1.0}, lr=1e-4)
  c.phase_order = ('aft',)
  c.init.hf_model = model_dir
  c.train.update(batch_size=2, seq_len=32, ckpt_every=10)
  run = trainer.Run(c, str(tmp_path / 'run'))
  state = run.start().state
  _, want = hf_load.load(model_dir, run.mesh)
  for (n, a), (_, b) in zip(
    train_state.flat_params(state['params']), train_state.flat_params(want)
  ):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=n)
  result = trainer.train(c, str(tmp_path / 'run2'), show_progress=False)
  assert result['step'] == 2 and np.isfinite(result['last_metrics']['loss'])


def test_llama31_rope_scaling_matches_transformers(tmp_path):
  """Llama 3.1+ 'llama3' RoPE scaling: imported logits equal transformers'."""
  import hf_fixtures

  model_dir = hf_fixtures.build(
    'llama', str(tmp_path / 'l31'), rope_parameters=hf_fixtures.LLAMA31_ROPE
  )
  cfg, params = load.load(model_dir, sharding.make_mesh((1, 1, 1), jax.devices()[:1]))
  assert cfg.rope_scaling == (8.0, 1.0, 4.0, 64.0)
  tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 96))
  ours = np.asarray(nnx.merge(train_state.model_shapes(cfg).graphdef, params)(tokens))
  assert np.abs(ours - hf_fixtures.hf_logits(model_dir, tokens)).max() < 1e-4
  plain = convert.model_config(load.read_config(model_dir))
  plain.rope_scaling = ()
  unscaled = np.asarray(nnx.merge(train_state.model_shapes(plain).graphdef, params)(tokens))
  assert np.abs(unscaled - ours).max() > 1e-3  # the scaling matters at these positions
