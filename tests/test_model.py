import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import lm
from mtspec import model, step, train_state


@pytest.mark.parametrize('variant', ['tiny', 'small'])
def test_forward_shapes_real(variant):
  cfg = lm.get_config(variant).model
  m = model.Transformer(cfg, nnx.Rngs(0))
  logits = m(jnp.zeros((2, 32), jnp.int32))
  assert logits.shape == (2, 32, cfg.vocab_size)
  assert logits.dtype == jnp.float32
  assert np.isfinite(np.asarray(logits)).all()


@pytest.mark.parametrize(
  'variant,published',
  [
    ('small', 10_227_072),  # the CPU benchmark shape, ~10.2M
    ('llama3_8b', 8_030_261_248),  # Llama-3.1-8B model card: 8.03B
    ('qwen3_32b', 32_762_123_264),  # Qwen3-32B: 32.8B
  ],
)
def test_param_counts_match_published(variant, published):
  assert model.param_count(lm.get_config(variant).model) == published


@pytest.mark.parametrize('variant', ['llama3_8b', 'qwen3_32b'])
def test_full_size_forward_shape_without_memory(variant):
  cfg = lm.get_config(variant).model
  shapes = train_state.model_shapes(cfg)
  tokens = jax.ShapeDtypeStruct((1, 128), jnp.int32)
  out = jax.eval_shape(lambda p, t: nnx.merge(shapes.graphdef, p)(t), shapes.params, tokens)
  assert out.shape == (1, 128, cfg.vocab_size)


def test_cached_model_shapes_ignore_later_edits_to_the_config(tiny_config):
  cfg = tiny_config.model
  first = train_state.model_shapes(cfg)
  first.params.clear()  # a caller editing its dicts leaves the cache intact
  d_model = cfg.d_model
  cfg.d_model = 2 * d_model  # an edited config is a new model...
  wider = train_state.model_shapes(cfg)
  assert wider.params['embed'].shape == (cfg.vocab_size, 2 * d_model)
  cfg.d_model = d_model  # ...and the first model was built from a frozen copy
  again = train_state.model_shapes(cfg)
  assert again.graphdef is first.graphdef
  assert again.params['embed'].shape == (cfg.vocab_size, d_model)
  tokens = jax.ShapeDtypeStruct((1, 8), jnp.int32)
  out = jax.eval_shape(lambda p, t: nnx.merge(again.graphdef, p)(t), again.params, tokens)
  assert out.shape == (1, 8, cfg.vocab_size)


def test_packed_documents_are_isolated(tiny_config):
  cfg = tiny_config.model
  m = model.Transformer(cfg, nnx.Rngs(1))
  rng = np.random.default_rng(0)
  tokens = rng.integers(4, cfg.vocab_size, (1, 24)).astype(np.int32)
  seg = np.array([[1] * 10 + [2] * 8 + [3] * 6], np.int32)
  pos = np.concatenate([np.arange(10), np.arange(8), np.arange(6)])[None].astype(np.int32)
  base = np.asarray(m(tokens, pos, seg))
  changed = tokens.copy()
  changed[0, 10:18] = rng.integers(4, cfg.vocab_size, 8)  # rewrite segment 2 only
  out = np.asarray(m(changed, pos, seg))
  np.testing.assert_array_equal(out[0, :10], base[0, :10])  # segment 1 untouched
  np.testing.assert_array_equal(out[0, 18:], base[0, 18:])  # segment 3 untouched
  assert not np.allclose(out[0, 10:18], base[0, 10:18])  # segment 2 did change
  # A packed document sees exactly what it would see alone in its own row.
  alone = np.asarray(m(tokens[:, 10:18], pos[:, 10:18], np.ones((1, 8), np.int32)))
  np.testing.assert_allclose(alone[0], base[0, 10:18], atol=2e-5)


def test_bf16_compute_with_f32_params(tiny_config):
  cfg = tiny_config.model
  cfg.dtype = 'bfloat16'
  m = model.Transformer(cfg, nnx.Rngs(0))
  assert m.layers[0].mlp.w_up[...].dtype == jnp.float32
  x = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 16)), jnp.int32)
  logits = m(x)
  assert logits.dtype == jnp.float32 and np.isfinite(np.asarray(logits)).all()
  cfg32 = tiny_config.model
  cfg32.dtype = 'float32'
  ref = model.Transformer(cfg32, nnx.Rngs(0))(x)
  np.testing.assert_allclose(np.asarray(logits), np.asarray(ref), atol=0.1)


def _loss_and_grads(cfg, batch):
  shapes = train_state.model_shapes(cfg)
  params = nnx.to_pure_dict(nnx.state(model.Transformer(cfg, nnx.Rngs(0)), nnx.Param))
  f = lambda p: step.weighted_loss_sums(nnx.merge(shapes.graphdef, p), batch)[0]
  return jax.value_and_grad(f)(params)


def test_remat_matches_plain(tiny_config):
  from mtspec.bench import synthetic_batch

  batch = synthetic_batch(tiny_config.model.vocab_size, 2, 16)
  l0, g0 = _loss_and_grads(tiny_config.model, batch)
  for policy in ('full', 'dots'):
    tiny_config.model.remat = policy
    l1, g1 = _loss_and_grads(tiny_config.model, batch)
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), g1, g0)


def test_qwen_options_build_and_run(tiny_config):
  cfg = tiny_config.model
  cfg.update(qk_norm=True, qkv_bias=True, tie_embeddings=False, head_dim=32)
  m = model.Transformer(cfg, nnx.Rngs(0))
  assert m.layers[0].attn.wq[...].shape == (cfg.d_model, cfg.n_heads, 32)
  assert m(jnp.zeros((1, 8), jnp.int32)).shape == (1, 8, cfg.vocab_size)


@pytest.mark.parametrize('T', [64, 128, 256])  # 1, 2 and 4 query chunks
def test_cpu_chunked_attention_matches_xla(tiny_config, T):
  """The CPU kernel (config model.attention='cpu_chunked') computes plain masked attention."""
  from mtspec.bench import synthetic_batch

  batch = synthetic_batch(tiny_config.model.vocab_size, 2, T)
  batch['segment_ids'][1, T // 3 :] = 2  # two packed documents in the second row
  l0, g0 = _loss_and_grads(tiny_config.model, batch)
  tiny_config.model.attention = 'cpu_chunked'
  l1, g1 = _loss_and_grads(tiny_config.model, batch)
  np.testing.assert_allclose(l1, l0, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5), g1, g0)


def test_decode_matches_the_forward_pass(tiny_config):
  """Prefill plus one token at a time through the KV cache gives the forward pass's logits."""
  cfg = tiny_config.model
  m = model.Transformer(cfg, nnx.Rngs(0))
  tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 10)).astype(np.int32)
  want = np.asarray(m(tokens))
  cache = m.init_cache(2, 16)
  pos = np.broadcast_to(np.arange(10), (2, 10)).astype(np.int32)
  seg = np.ones((2, 10), np.int32)
  got, cache = m.decode(tokens[:, :6], pos[:, :6], seg[:, :6], cache)
  steps = [np.asarray(got)]
  for i in range(6, 10):
    logits, cache = m.decode(tokens[:, i : i + 1], pos[:, i : i + 1], seg[:, i : i + 1], cache)
    steps.append(np.asarray(logits))
  np.testing.assert_allclose(np.concatenate(steps, axis=1), want, atol=2e-5)
  assert int(cache['index']) == 10


def test_the_default_attention_never_imports_the_cpu_kernels():
  code = (
    'import sys, jax.numpy as jnp; from flax import nnx; from configs import lm; '
    'from mtspec import model, step, train_state; '
    "cfg = lm.get_config('tiny').model; model.Transformer(cfg, nnx.Rngs(0))"
    '(jnp.zeros((1, 8), jnp.int32)); '
    "assert not [m for m in sys.modules if m.startswith('mtspec.cpu')]"
  )
  from conftest import run_module

  run_module(['-c', code])
