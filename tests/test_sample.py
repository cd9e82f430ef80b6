"""Sampling with a KV cache: greedy equals transformers' generate (issue 6)."""

import hf_fixtures
import jax
import numpy as np
import torch
import transformers

from mtspec import sample, sharding, train_state
from mtspec.hf import load as hf_load


def _models(tmp_path, family):
  model_dir = hf_fixtures.build(family, str(tmp_path / family))
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  cfg, params = hf_load.load(model_dir, mesh)
  hf = transformers.AutoModelForCausalLM.from_pretrained(
    model_dir, torch_dtype=torch.float32, attn_implementation='eager'
  )
  return train_state.model_shapes(cfg).graphdef, params, hf, cfg


def test_greedy_matches_transformers_token_for_token(tmp_path):
  for family in ('llama', 'qwen3'):
    graphdef, params, hf, cfg = _models(tmp_path, family)
    rng = np.random.default_rng(1)
    prompts = [rng.integers(5, cfg.vocab_size, n).tolist() for n in (7, 4, 9)]
    ours = sample.generate(graphdef, params, prompts, max_new_tokens=12)
    for p, got in zip(prompts, ours):
      with torch.no_grad():
        want = hf.generate(
          torch.tensor([p]), max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0
        )[0, len(p) :].tolist()
      assert got == want, (family, p)


def test_end_tokens_stop_and_sampling_is_seeded(tmp_path):
  graphdef, params, _, cfg = _models(tmp_path, 'llama')
  prompts = [[5, 6, 7], [8, 9]]
  greedy = sample.generate(graphdef, params, prompts, max_new_tokens=8)
  end = greedy[0][2]
  stopped = sample.generate(graphdef, params, prompts, max_new_tokens=8, end_ids=[end])
  assert stopped[0] == greedy[0][:3]
  a = sample.generate(graphdef, params, prompts, 8, temperature=1.0, top_p=0.9, seed=3)
  b = sample.generate(graphdef, params, prompts, 8, temperature=1.0, top_p=0.9, seed=3)
  c = sample.generate(graphdef, params, prompts, 8, temperature=1.0, top_p=0.9, seed=4)
  assert a == b and a != c
  nucleus = sample.generate(graphdef, params, prompts, 8, temperature=1.0, top_p=1e-6, seed=5)
  assert nucleus == greedy  # a tiny top-p keeps only the most likely token
  assert sample.cut_at_stop_strings('yes. STOP more', ['STOP', 'zzz']) == 'yes. '
