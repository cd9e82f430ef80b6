"""The training loop over a phase plan: data -> jitted step -> metrics -> checkpoints.

A run resumes from its own workdir; a fresh run may start from another run's checkpoint or
from a Hugging Face model (config `init`). Every phase boundary gets a permanent checkpoint,
and every checkpoint carries lineage JSON.
"""

import functools
import os
import time
from typing import Any, NamedTuple

import jax
import numpy as np
from tqdm import tqdm

from mtspec import config as config_lib
from mtspec import lineage, lora, memory, optim, paths, sharding, train_state
from mtspec import metrics as metrics_lib
from mtspec import model as model_lib
from mtspec import phases as phases_lib
from mtspec import step as step_lib

# Re-exported for callers outside the core: mtspec/experiment.py and tests.
from mtspec.checkpoint import (
  Checkpointer,
  checkpoint_params,  # noqa: F401
  ensure_writable,
  restore_from_path,
)
from mtspec.data import setup as data_setup
from mtspec.data.setup import load_or_train_tokenizer, open_sources  # noqa: F401


class NonFiniteLoss(RuntimeError):
  pass


class Start(NamedTuple):
  """Where a run's loop begins."""

  state: dict
  step: int
  phase: phases_lib.Phase
  batches: Any  # the phase's data_setup.phase_batches, positioned at `step`
  parent: dict | None  # the checkpoint the state came from
  ancestors: list  # lineage of that checkpoint
  base: dict | None = None  # LoRA's frozen base params


class _Origin(NamedTuple):
  restored: dict | None  # {'params'[, 'opt_state']} to start from; None: a seeded init
  parent: dict | None
  ancestors: list


class Run:
  """One training run's parts, built from its config (validated first)."""

  def __init__(self, cfg, workdir: str):
    config_lib.validate(cfg)
    self.cfg, self.workdir = cfg, workdir
    ensure_writable(workdir, os.path.join(workdir, 'checkpoints'))
    self.name = cfg.get('run_name') or os.path.basename(os.path.normpath(workdir))
    self.plan = phases_lib.plan(cfg)
    self.total_steps = phases_lib.total_steps(self.plan)
    self.mesh = sharding.make_mesh(cfg.mesh.shape)
    schedule = phases_lib.schedule(self.plan)
    self.optimizer = optim.make_optimizer(cfg.train, schedule)
    self.shapes = train_state.model_shapes(cfg.model)
    self.trained = train_state.trained_setup(cfg, self.mesh, self.optimizer, self.shapes)
    self.sources, self.tokenizer = data_setup.prepare(cfg, workdir, self.plan)
    self.checkpointer = Checkpointer(
      os.path.join(workdir, 'checkpoints'),
      cfg.train.keep_ckpts,
      keep_steps=[p.end for p in self.plan],
    )
    self.train_step = step_lib.make_train_step(
      self.shapes.graphdef,
      self.optimizer,
      schedule,
      cfg.train.grad_accum,
      self.trained.shardings,
      self.mesh,
      lora.settings(cfg),
      self.trained.base_shardings,
    )

  def batches(self, phase):
    return data_setup.phase_batches(self.cfg, self.sources, self.tokenizer, phase)

  def start(self) -> Start:
    """Resumes from this run's newest intact checkpoint, or starts afresh from config `init`."""
    target = train_state.abstract_state(
      self.optimizer, self.trained.abstract, self.trained.shardings
    )
    if found := self.checkpointer.restore_latest(target):
      return self._resume(*found)
    origin = self._origin()
    base = None
    if self.trained.lora:
      base = self._frozen_base(origin)
      state = train_state.init_lora_state(
        self.optimizer, self.trained.init_adapters, self.trained.shardings
      )
    elif origin.restored is None:
      state = train_state.init_state(
        self.cfg.model, self.optimizer, self.cfg.train.seed, self.trained.shardings
      )
    else:
      state = train_state.state_from(self.optimizer, origin.restored, self.trained.shardings)
    phase = self.plan[0]
    return Start(state, 0, phase, self.batches(phase), origin.parent, origin.ancestors, base)

  def _resume(self, step: int, state: dict, meta: dict) -> Start:
    base = self._frozen_base(self._origin()) if self.trained.lora else None
    phase = phases_lib.phase_at(self.plan, step)
    batches = self.batches(phase)
    if step > phase.start:  # at a boundary the next phase starts a fresh stream
      self.checkpointer.restore_data(step, batches)
    parent = {'path': self.checkpointer.step_dir(step), 'step': step}
    return Start(state, step, phase, batches, parent, meta.get('ancestors', []), base)

  def _origin(self) -> _Origin:
    """The params a fresh run starts from: a Hugging Face model, a checkpoint, or none."""
    init = self.cfg.init
    if init.get('hf_model'):
      from mtspec.hf import load as hf_load  # safetensors only for runs that need it

      params = hf_load.load_for(self.cfg.model, init.hf_model, self.mesh)
      return _Origin(
        {'params': params},
        {'path': init.hf_model, 'step': None},
        [{'run': 'huggingface', 'phase': None, 'step': None, 'path': init.hf_model}],
      )
    if init.checkpoint:
      mode = 'params' if self.trained.lora else init.mode  # a LoRA base is params only
      shardings = train_state.state_shardings(self.mesh, self.optimizer, self.shapes)
      target = train_state.abstract_state(self.optimizer, self.shapes.params, shardings)
      restored, meta = restore_from_path(init.checkpoint, target, mode)
      ancestors = meta.get('ancestors', []) + [
        {k: meta.get(k) for k in ('run', 'phase', 'step')} | {'path': init.checkpoint}
      ]
      return _Origin(restored, {'path': init.checkpoint, 'step': meta.get('step')}, ancestors)
    return _Origin(None, None, [])

  def _frozen_base(self, origin: _Origin) -> dict:
    """LoRA's base: the starting params, or a seeded init when there are none."""
    if origin.restored is not None:
      return origin.restored['params']
    return train_state.init_params(self.cfg.model, self.cfg.train.seed, self.trained.base_shardings)

  def memory_estimate(self) -> memory.Estimate:
    t = self.trained
    abstract = train_state.abstract_state(self.optimizer, t.abstract, t.shardings)
    frozen = (self.shapes.params, t.base_shardings) if t.lora else None
    return memory.estimate(self.cfg, abstract, t.shardings, dict(self.mesh.shape), frozen)


@jax.jit
def _all_finite(tree):
  return jax.numpy.all(
    jax.numpy.stack([jax.numpy.isfinite(x).all() for x in jax.tree.leaves(tree)])
  )


def _check_loss(checkpointer, step_metrics, step: int, phase_name: str):
  loss = float(jax.device_get(step_metrics['loss']))
  if not np.isfinite(loss):
    raise NonFiniteLoss(
      f'loss is {loss} at step {step} (phase {phase_name!r}); the run stopped and its '
      f'last good checkpoint (step {checkpointer.latest_step()}) stays the latest'
    )


class _Throughput:
  """Tokens per second over the steps since the last reset; the first (compiling) step
  starts the clock instead of counting."""

  def __init__(self, tokens_per_step: int):
    self.tokens_per_step, self.start, self.steps = tokens_per_step, None, 0

  def step(self, step_metrics):
    if self.start is None:
      jax.block_until_ready(step_metrics)
      self.reset()
    else:
      self.steps += 1

  def reset(self):
    self.start, self.steps = time.perf_counter(), 0

  def tokens_per_second(self) -> float | None:
    if not self.steps:
      return None
    return self.steps * self.tokens_per_step / (time.perf_counter() - self.start)


def _log_row(
  step_metrics, throughput: _Throughput, flops_per_token: float, peak: float, batches, phase
) -> dict:
  """The step's metrics, throughput and MFU (against `peak` per device), source epochs."""
  m = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
  if (tok_s := throughput.tokens_per_second()) is not None:
    m['tokens_per_second'] = tok_s
    m['mfu'] = tok_s * flops_per_token / (peak * jax.device_count())
  m.update({f'epoch/{n}': e for n, e in batches.epochs().items()}, phase_index=phase.index)
  return m


def train(cfg, workdir: str, show_progress: bool = True, progress_position: int = 0) -> dict:
  """Runs the phase plan to its end (resuming from workdir); returns the final summary.
  progress_position: the progress bar's line (lanes side by side, mtspec.cpu.lanes)."""
  run = Run(cfg, workdir)
  t = cfg.train
  primary = jax.process_index() == 0
  if primary:
    print(
      f'{run.name}: mesh {dict(run.mesh.shape)}; estimated memory: '
      f'{run.memory_estimate().table(memory.device_gib())}',
      flush=True,
    )
  start = run.start()
  state, phase, batches, parent = start.state, start.phase, start.batches, start.parent
  profile = tuple(cfg.get('profile_steps', ()))
  writer = metrics_lib.MetricsWriter(workdir, enabled=primary, start_step=start.step)
  peak, peak_source = metrics_lib.peak_flops_per_device(cfg.model.dtype, t.peak_flops)
  flops_tok = model_lib.flops_per_token(cfg.model, t.seq_len)
  throughput = _Throughput(t.batch_size * t.seq_len)
  bar = tqdm(
    total=run.total_steps,
    initial=start.step,
    desc=f'{run.name}: {phase.name}',
    dynamic_ncols=True,
    position=progress_position,
    disable=not (primary and show_progress),
  )
  last, pending = {}, None
  check = functools.partial(_check_loss, run.checkpointer)
  try:
    for s in range(start.step, run.total_steps):
      if s >= phase.end:  # phase boundary: switch to the next phase's stream
        phase = phases_lib.phase_at(run.plan, s)
        batches = run.batches(phase)
        bar.set_description(f'{run.name}: {phase.name}')
      if profile and s == profile[0]:
        jax.profiler.start_trace(os.path.join(workdir, 'profile'))
      batch = sharding.to_global(next(batches), run.mesh)
      state, step_metrics = run.train_step(state, batch, start.base)
      if pending is not None:
        check(*pending)  # the previous step's loss, read while this step runs
      done = s + 1
      pending = (step_metrics, done, phase.name)
      run.checkpointer.check()  # a failed background write stops the run now
      throughput.step(step_metrics)
      bar.update(1)
      if profile and done == profile[1]:
        jax.block_until_ready(state)
        jax.profiler.stop_trace()  # view with TensorBoard's profile plugin
      if done % t.log_every == 0 or done == phase.end:
        check(*pending)
        m = _log_row(step_metrics, throughput, flops_tok, peak, batches, phase)
        writer.write(done, m)
        bar.set_postfix(loss=f'{m["loss"]:.3f}', tok_s=f'{m.get("tokens_per_second", 0):.0f}')
        last = {'step': done, 'phase': phase.name, **m}
        throughput.reset()
      if done % t.ckpt_every == 0 or done == phase.end:
        check(*pending)  # never save a state that came from a non-finite loss...
        if not bool(_all_finite(state['params'])):  # ...or holds non-finite params
          raise NonFiniteLoss(
            f'parameters became non-finite at step {done} (phase '
            f'{phase.name!r}); the run stopped and its last good checkpoint '
            f'(step {run.checkpointer.latest_step()}) stays the latest'
          )
        meta = lineage.record(cfg, run.name, phase.name, done, parent, run.sources, start.ancestors)
        run.checkpointer.save(done, state, batches, meta)
        parent = {'path': run.checkpointer.step_dir(done), 'step': done}
        if done == phase.end and primary:
          _write_json(
            os.path.join(workdir, 'phases', f'{phase.name}.json'),
            {'phase': phase.name, 'step': done, 'path': parent['path']},
          )
    run.checkpointer.wait()
  finally:
    bar.close()
    writer.close()
    run.checkpointer.close()
  summary_path = os.path.join(workdir, 'summary.json')
  if not last and paths.exists(summary_path):  # already complete: keep what it measured
    last = paths.read_json(summary_path)['last_metrics']
  summary = {
    'run': run.name,
    'step': run.total_steps,
    'final_checkpoint': os.path.join(workdir, 'checkpoints', str(run.total_steps)),
    'peak_flops': peak,
    'peak_source': peak_source,
    'flops_per_token': flops_tok,
    'last_metrics': last,
  }
  if primary:  # whole or absent: an experiment reads it while other lanes train
    _write_json(summary_path, summary, indent=2)
  return {'state': state, **summary}


def _write_json(path: str, data, indent=None):
  """Writes through a temporary file: readers see the whole file or none."""
  paths.write_json(path, data, indent=indent)
