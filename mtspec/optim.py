"""Learning-rate schedules and the AdamW optimizer."""

import jax
import optax


def lr_schedule(
  peak: float, steps: int, warmup: int, kind: str, min_ratio: float, decay_fraction: float = 0.2
) -> optax.Schedule:
  """warmup -> cosine decay, or warmup -> stable -> linear decay (WSD)."""
  warmup = min(warmup, steps)
  end = peak * min_ratio
  warm = optax.linear_schedule(0.0, peak, max(warmup, 1))
  rest = max(steps - warmup, 1)
  if kind == 'cosine':
    after = optax.cosine_decay_schedule(peak, rest, alpha=min_ratio)
  elif kind == 'wsd':
    decay = max(int(round(rest * decay_fraction)), 1)
    after = optax.join_schedules(
      [optax.constant_schedule(peak), optax.linear_schedule(peak, end, decay)], [rest - decay]
    )
  else:
    raise ValueError(f'train.schedule={kind!r}: expected cosine or wsd')
  return optax.join_schedules([warm, after], [warmup])


def _decay_mask(params):
  # No weight decay on norms and biases (1-D and 2-D bias tensors are all non-matrices here).
  return {
    k: _decay_mask(v) if isinstance(v, dict) else v.ndim >= 2 and k not in ('bq', 'bk', 'bv')
    for k, v in params.items()
  }


def make_optimizer(tcfg, schedule: optax.Schedule) -> optax.GradientTransformation:
  return optax.chain(
    optax.clip_by_global_norm(tcfg.grad_clip) if tcfg.grad_clip > 0 else optax.identity(),
    optax.adamw(
      schedule,
      b1=tcfg.b1,
      b2=tcfg.b2,
      eps=tcfg.eps,
      weight_decay=tcfg.weight_decay,
      mask=_decay_mask,
    ),
  )


def restart_schedule(opt_state):
  """The optimizer state with its LR schedule back at step 0. optax reads the schedule from
  a count inside the state, so a branch that carries its trunk's state (init.mode=full)
  would otherwise follow the trunk's count, not its own phases. (count * 0 keeps the
  count's device placement.)"""
  is_schedule = lambda x: isinstance(x, optax.ScaleByScheduleState)
  return jax.tree.map(
    lambda x: x._replace(count=x.count * 0) if is_schedule(x) else x, opt_state, is_leaf=is_schedule
  )
