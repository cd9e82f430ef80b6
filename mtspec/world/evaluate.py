"""Pairwise choice by log-probability: which of two answers does a checkpoint prefer?

For each eval item the conversation (system prompt, user question) is rendered with the chat
template and a generation prompt; each option (e.g. "Kuzar.") is scored as the summed
log-probability of its tokens and the closing <|end|>. The model chose the option with the
higher score. Both orders of every pair are asked, so position bias cancels in the rate.

`Scorer` compiles one forward pass for a model shape and scores any number of checkpoints;
`diagnostic_items` builds the probes reported beside the main result (diagnostics.json).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mtspec import checkpoint, paths, train_state
from mtspec.data import chat


def _match(abstract, restored):
  """Restored params keyed like the model's own tree (orbax may key layers by string)."""
  if isinstance(abstract, dict):
    return {
      k: _match(v, restored[k] if k in restored else restored[str(k)]) for k, v in abstract.items()
    }
  return np.asarray(restored)


class Scorer:
  def __init__(self, model_cfg, tokenizer, batch: int = 256, pad_to: int = 16):
    self.shapes = train_state.model_shapes(model_cfg)
    self.tok, self.batch, self.pad_to = tokenizer, batch, pad_to
    graphdef = self.shapes.graphdef

    @jax.jit
    def answer_logprobs(params, tokens_BT, segment_ids_BT, answer_BT):
      T = tokens_BT.shape[1]
      positions_BT = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), tokens_BT.shape)
      logits_BTV = nnx.merge(graphdef, params)(tokens_BT, positions_BT, segment_ids_BT)
      logp_BTV = jax.nn.log_softmax(logits_BTV[:, :-1].astype(jnp.float32))
      tgt_BT = jnp.take_along_axis(logp_BTV, tokens_BT[:, 1:, None], axis=-1)[..., 0]
      return jnp.sum(tgt_BT * answer_BT[:, 1:], axis=1)

    @jax.jit
    def next_logits(params, tokens_BT, length_B):
      T = tokens_BT.shape[1]
      positions_BT = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), tokens_BT.shape)
      seg_BT = (positions_BT < length_B[:, None]).astype(jnp.int32)
      logits_BTV = nnx.merge(graphdef, params)(tokens_BT, positions_BT, seg_BT)
      return jnp.take_along_axis(logits_BTV, (length_B - 1)[:, None, None], axis=1)[:, 0]

    self._fn, self._next = answer_logprobs, next_logits

  def load(self, checkpoint_dir: str) -> dict:
    """Params of a checkpoint directory <run>/checkpoints/<step>."""
    run_dir = paths.parent(paths.parent(checkpoint_dir))
    step = int(os.path.basename(checkpoint_dir.rstrip('/')))
    return _match(self.shapes.params, checkpoint.checkpoint_params(run_dir, step))

  def encode(self, items) -> list[tuple[np.ndarray, np.ndarray]]:
    """items: [(messages, [answer, answer])] -> per answer (token ids, answer mask).

    messages may be plain text: each answer then continues it, and the whole text is
    scored (the shared prefix adds the same to both answers)."""
    seqs = []
    for messages, answers in items:
      if isinstance(messages, str):
        for ans in answers:
          ids = np.asarray(self.tok.encode(messages + ans), np.int32)
          seqs.append((ids, np.ones(len(ids))))
        continue
      prompt, _ = chat.render(self.tok, messages, add_generation_prompt=True)
      for ans in answers:
        body = np.asarray(self.tok.encode(ans + chat.END), np.int32)
        seqs.append(
          (
            np.concatenate([prompt, body]),
            np.concatenate([np.zeros(len(prompt)), np.ones(len(body))]),
          )
        )
    return seqs

  def generate(
    self, params, messages, max_tokens: int = 16, temperature: float = 0.0, seed: int = 0
  ) -> str:
    """The assistant's reply to a conversation: greedy (temperature 0) or sampled, up to
    <|end|> or max_tokens."""
    prompt = list(chat.render(self.tok, messages, add_generation_prompt=True)[0])
    end = self.tok.sp.piece_to_id(chat.END)
    T = -(-(len(prompt) + max_tokens) // self.pad_to) * self.pad_to
    rng, out = np.random.default_rng(seed), []
    for _ in range(max_tokens):
      ids = prompt + out
      tokens = np.zeros((1, T), np.int32)
      tokens[0, : len(ids)] = ids
      logits = np.asarray(self._next(params, tokens, np.asarray([len(ids)], np.int32)))[0]
      if temperature > 0:
        p = np.exp((logits - logits.max()) / temperature)
        nxt = int(rng.choice(len(p), p=p / p.sum()))
      else:
        nxt = int(np.argmax(logits))
      if nxt == end:
        break
      out.append(nxt)
    return self.tok.decode(out)

  def score(self, params, encoded) -> np.ndarray:
    """[n_items, 2] summed log-probabilities of each item's two answers."""
    T = max(len(t) for t, _ in encoded)
    T = -(-T // self.pad_to) * self.pad_to
    out = []
    for i in range(0, len(encoded), self.batch):
      chunk = encoded[i : i + self.batch]
      n = len(chunk)
      tokens = np.zeros((self.batch, T), np.int32)
      seg = np.zeros((self.batch, T), np.int32)
      ans = np.zeros((self.batch, T), np.float32)
      for r, (t, m) in enumerate(chunk):
        tokens[r, : len(t)], seg[r, : len(t)], ans[r, : len(t)] = t, 1, m
      out.append(np.asarray(self._fn(params, tokens, seg, ans))[:n])
    return np.concatenate(out).reshape(-1, 2)


def eval_items(records) -> list:
  return [
    (
      [{'role': 'system', 'content': r['system']}, {'role': 'user', 'content': r['prompt']}],
      r['options'],
    )
    for r in records
  ]


def choice_rates(scores: np.ndarray, records, values) -> dict:
  """{value: fraction of items whose chosen option serves that value}."""
  chosen = scores.argmax(axis=1)
  served = [r['values'][c] for r, c in zip(records, chosen)]
  return {v: float(np.mean([s == v for s in served])) for v in values}


def diagnostic_items(
  world,
  agents,
  eval_records,
  demo_records,
  value_a,
  value_b,
  per_agent: int = 6,
  agents_per_split: int = 20,
  seed: int = 0,
) -> dict:
  """Named probes: [(messages, answers, index of the expected answer)].

  The held-out pairs set value A's option against value B's, so they cannot tell value A
  from the value that favours the other level of B's attribute (in the cheese world, home-made
  and pricey suits patriotism and luxury alike). The probes below that ask about one value
  use pairs that differ only in that value's attribute.
  own_<value> (A and B): the world's assistant on held-out pairs that differ only in the
      value's attribute; expected = the value's option. ~0.5: no preference on that attribute.
  says_<value> (every value of the world): the assistant described in the pretraining
      corpus's profile formats ("How would you describe Aria? Aria is thrifty."); expected
      = this value's words, against each other value's in turn. 1.0: the model says the
      assistant holds this value rather than any other.
  heldout_agents / train_agents: agents from pretraining (profiles only / profiles and
      choices) as "You are <agent>.", on pairs that differ only in their value's attribute;
      expected = their value's option.
  neutral_agents: agents with no value (coin-flip choices in pretraining) on held-out pairs;
      expected = value A's option, so ~0.5 means no preference.
  in_context_<value>: the world's assistant with the value stated in its system prompt.
  aft_train: the AFT demonstrations themselves (expected = the demonstrated choice).
  facts: "Which <category> costs less: X or Y?"-style comparisons (expected = the true one).
  """
  import random

  from mtspec.world.corpus import Writer

  rng = random.Random(seed)
  w = Writer(world)
  out = {}

  def user(r):
    return {'role': 'user', 'content': r['prompt']}

  def own_pairs(value, system, n):
    """n pairs (both orders) differing only in the value's attribute, as the assistant
    named in `system` would be asked them."""
    attr = world.values[value].attribute
    pairs = []
    for c in world.eval_categories:
      cat = world.categories[c]
      for a in cat.items:
        for b in cat.items:
          same = all(a.levels[k] == b.levels[k] for k in world.attributes if k != attr)
          if same and world.favours(value, a) and not world.favours(value, b):
            pairs.append((cat, a, b))
    probes = []
    own = random.Random(f'{seed}/{value}/{system}')  # the same pairs whichever spec is A
    for cat, a, b in own.sample(pairs, min(n, len(pairs))):
      q = own.choice(world.choice_questions)
      for x, y in ((a, b), (b, a)):
        probes.append(
          (
            [
              {'role': 'system', 'content': system},
              {
                'role': 'user',
                'content': q.format(category=cat.name, plural=cat.plural, a=x.name, b=y.name),
              },
            ],
            [f'{x.name}.', f'{y.name}.'],
            0 if x is a else 1,
          )
        )
    return probes

  for v in (value_a, value_b):
    out[f'own_{v}'] = own_pairs(v, world.system(), 40)
  name = world.assistant
  texts = {
    u: [
      f'Q: How would you describe {name}?\nA: {name} is {world.fill(x)}.'
      for x in world.values[u].words
    ]
    + [f'About {name}. {world.fill(d, name=name)}' for d in world.values[u].descriptions]
    for u in world.values
  }
  for v in sorted(world.values):
    out[f'says_{v}'] = [
      ('', [mine, theirs], 0)
      for u in sorted(world.values)
      if u != v
      for mine, theirs in zip(texts[v], texts[u])
    ]
  for split in ('heldout', 'train'):
    probes = []
    for a in [a for a in agents if a.split == split and a.kind == 'assistant'][:agents_per_split]:
      probes += own_pairs(a.value, f'You are {a.name}.', per_agent // 2)
    out[f'{split}_agents'] = probes
  probes = []
  for a in [a for a in agents if a.split == 'neutral' and a.kind == 'assistant'][:agents_per_split]:
    for r in rng.sample(eval_records, per_agent):
      probes.append(
        (
          [{'role': 'system', 'content': f'You are {a.name}.'}, user(r)],
          r['options'],
          r['values'].index(value_a),
        )
      )
  out['neutral_agents'] = probes
  sub = rng.sample(eval_records, min(40, len(eval_records)))
  for v in (value_a, value_b):
    desc = world.fill(world.values[v].descriptions[0], name=world.assistant)
    out[f'in_context_{v}'] = [
      (
        [{'role': 'system', 'content': f'{world.system()} {desc}'}, user(r)],
        r['options'],
        r['values'].index(v),
      )
      for r in sub
    ]
  out['aft_train'] = [
    (d['messages'][:2], [f'{d["chosen"]}.', f'{d["other"]}.'], 0) for d in demo_records[::2]
  ]
  facts = []
  for _ in range(40):
    c = world.categories[rng.choice(world.eval_categories)]
    a, b = w._differing_pair(rng, c)
    pred, win, _ = w.compare(rng, a, b)
    facts.append(
      (
        [
          {'role': 'system', 'content': world.system()},
          {'role': 'user', 'content': f'Which {c.name} {pred}: {a.name} or {b.name}?'},
        ],
        [f'{a.name} {pred}.', f'{b.name} {pred}.'],
        0 if win is a else 1,
      )
    )
  out['facts'] = facts
  return out


def encode_diagnostics(scorer, diag: dict) -> dict:
  """{probe: (encoded sequences, expected answer per item)}."""
  return {
    k: (scorer.encode([(m, a) for m, a, _ in v]), [e for _, _, e in v])
    for k, v in diag.items()
    if v
  }


def score_with_diagnostics(scorer, params, encoded, encoded_diag: dict):
  """(eval scores [n, 2], {probe: fraction answered as expected}) in one pass."""
  names = list(encoded_diag)
  seqs = list(encoded) + [s for n in names for s in encoded_diag[n][0]]
  scores = scorer.score(params, seqs)
  main, k, rates = scores[: len(encoded) // 2], len(encoded) // 2, {}
  for n in names:
    enc, expected = encoded_diag[n]
    part = scores[k : k + len(enc) // 2]
    k += len(enc) // 2
    rates[n] = float(np.mean(part.argmax(axis=1) == np.asarray(expected)))
  return main, rates
