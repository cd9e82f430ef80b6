"""The phase plan: ordered phases, each a length, a source mixture and an LR schedule.

Global step s belongs to the phase whose [start, end) contains it. The learning rate restarts
its warmup at each phase boundary, as a new training stage would.
"""

import dataclasses

import optax

from mtspec.errors import ConfigError
from mtspec.optim import lr_schedule


@dataclasses.dataclass(frozen=True)
class Phase:
  name: str
  index: int
  start: int  # first global step of the phase
  steps: int
  weights: dict  # source name -> weight > 0 (zero weights dropped)
  lr: float
  warmup_steps: int
  schedule: str
  min_lr_ratio: float
  decay_fraction: float

  @property
  def end(self) -> int:
    return self.start + self.steps


def plan(cfg) -> list[Phase]:
  """Validates cfg.phase_order / cfg.phases against cfg.sources and lays the phases out."""
  order = tuple(cfg.phase_order)
  if not order:
    raise ConfigError('config.phase_order is empty: name at least one phase')
  phases, start = [], 0
  for i, name in enumerate(order):
    key = f'phases.{name}'
    if name not in cfg.phases:
      raise ConfigError(
        f'config.phase_order names {name!r}, but config.phases has no such '
        f'phase (have: {sorted(cfg.phases.keys())})'
      )
    p = cfg.phases[name]
    if int(p.steps) <= 0:
      raise ConfigError(f'config.{key}.steps={p.steps!r}: must be a positive integer')
    weights = {}
    for src, w in dict(p.weights).items():
      if src not in cfg.sources:
        raise ConfigError(
          f'config.{key}.weights names unknown source {src!r} '
          f'(config.sources has: {sorted(cfg.sources.keys())})'
        )
      if w < 0:
        raise ConfigError(f'config.{key}.weights.{src}={w!r}: weights must not be negative')
      if w > 0:
        weights[src] = float(w)
    if not sum(weights.values()) > 0:
      raise ConfigError(f'config.{key}.weights={dict(p.weights)!r}: must sum to a positive number')
    if not 0 <= p.warmup_steps <= p.steps:
      raise ConfigError(
        f'config.{key}.warmup_steps={p.warmup_steps!r}: must lie in [0, {key}.steps={p.steps}]'
      )
    if p.schedule not in ('cosine', 'wsd'):
      raise ConfigError(f'config.{key}.schedule={p.schedule!r}: expected cosine or wsd')
    if not p.lr > 0:
      raise ConfigError(f'config.{key}.lr={p.lr!r}: must be positive')
    total = sum(weights.values())
    phases.append(
      Phase(
        name,
        i,
        start,
        int(p.steps),
        {k: v / total for k, v in weights.items()},
        float(p.lr),
        int(p.warmup_steps),
        p.schedule,
        float(p.min_lr_ratio),
        float(p.decay_fraction),
      )
    )
    start += int(p.steps)
  return phases


def total_steps(phases: list[Phase]) -> int:
  return phases[-1].end


def phase_at(phases: list[Phase], step: int) -> Phase:
  """The phase that global step `step` (0-based, the step about to run) belongs to."""
  for p in phases:
    if p.start <= step < p.end:
      return p
  return phases[-1]


def schedule(phases: list[Phase]) -> optax.Schedule:
  parts = [
    lr_schedule(p.lr, p.steps, p.warmup_steps, p.schedule, p.min_lr_ratio, p.decay_fraction)
    for p in phases
  ]
  return optax.join_schedules(parts, [p.start for p in phases[1:]])
