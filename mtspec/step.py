"""The jitted, sharded train step: weighted next-token loss, accumulation, AdamW update."""

import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from mtspec import lora, sharding

BATCH_KEYS = ('tokens', 'positions', 'segment_ids', 'targets', 'loss_weights')


def weighted_loss_sums(model, batch):
  """(sum of weight x cross-entropy, sum of weights) over one (micro)batch."""
  logits_BTV = model(batch['tokens'], batch['positions'], batch['segment_ids'])
  ce_BT = optax.softmax_cross_entropy_with_integer_labels(logits_BTV, batch['targets'])
  w_BT = batch['loss_weights']
  return jnp.sum(ce_BT * w_BT), jnp.sum(w_BT)


def _split_micro(x, n: int):
  # (B, ...) -> (n, B/n, ...) with strided rows, so every device keeps its share of every
  # microbatch and no data moves between devices.
  x = x.reshape((x.shape[0] // n, n) + x.shape[1:])
  return jnp.swapaxes(x, 0, 1)


def make_train_step(
  graphdef,
  optimizer,
  schedule,
  grad_accum: int,
  shardings: dict,
  mesh,
  lora_settings: lora.Settings | None = None,
  base_shardings=None,
):
  """step(state, batch, base) -> (state, metrics).

  With LoRA, state['params'] holds the adapters and `base` the frozen base params (not
  donated, never updated); otherwise base is None. Without dropout the adapters are merged
  into the weights; with it they run beside them, with a dropout mask that is a function of
  (seed, step), so a resumed run draws the same masks.
  """
  batch_shard = {k: sharding.batch_sharding(mesh) for k in BATCH_KEYS}
  replicated = jax.sharding.NamedSharding(mesh, jax.P())

  def loss_sums(trained, base, batch, step):
    s = lora_settings
    if s is None:
      model = nnx.merge(graphdef, trained)
    elif s.dropout > 0:
      key = jax.random.fold_in(jax.random.key(s.seed), step)
      model = lora.with_dropout(nnx.merge(graphdef, base), trained, s.alpha, s.rank, s.dropout, key)
    else:
      model = nnx.merge(graphdef, lora.merge(base, trained, s.alpha, s.rank))
    return weighted_loss_sums(model, batch)

  grad_fn = jax.value_and_grad(loss_sums, has_aux=True)

  def step(state, batch, base):
    params = state['params']
    if grad_accum == 1:
      (loss_sum, w_sum), grads = grad_fn(params, base, batch, state['step'])
    else:
      micro = jax.tree.map(lambda x: _split_micro(x, grad_accum), batch)

      def body(carry, mb_i):
        mb, i = mb_i
        mb = {k: sharding.constrain(v, ('batch', 'seq')) for k, v in mb.items()}
        (l, w), g = grad_fn(params, base, mb, state['step'] * grad_accum + i)
        return jax.tree.map(jnp.add, carry, (l, w, g)), None

      zeros = (jnp.zeros(()), jnp.zeros(()), jax.tree.map(jnp.zeros_like, params))
      (loss_sum, w_sum, grads), _ = jax.lax.scan(body, zeros, (micro, jnp.arange(grad_accum)))
    denom = jnp.maximum(w_sum, 1.0)
    grads = jax.tree.map(lambda g: g / denom, grads)
    updates, opt_state = optimizer.update(grads, state['opt_state'], params)
    new_state = {
      'params': optax.apply_updates(params, updates),
      'opt_state': opt_state,
      'step': state['step'] + 1,
    }
    metrics = {
      'loss': loss_sum / denom,
      'grad_norm': optax.tree.norm(grads),
      'lr': schedule(state['step']),
      'loss_tokens': w_sum,
    }
    return new_state, metrics

  jitted = jax.jit(
    step,
    in_shardings=(shardings, batch_shard, base_shardings),
    out_shardings=(shardings, replicated),
    donate_argnums=(0,),
  )

  @functools.wraps(step)
  def run(state, batch, base=None):
    with jax.set_mesh(mesh):
      return jitted(state, batch, base)

  run.jitted = jitted
  return run
