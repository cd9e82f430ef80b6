"""The training loop over a phase plan: data -> jitted step -> metrics -> checkpoints.

A run resumes from its own workdir; a fresh run may start from another run's checkpoint
(config `init`). Every phase boundary gets a permanent checkpoint, and every checkpoint
carries lineage JSON.
"""
import json
import os
import time

import jax
import numpy as np
from tqdm import tqdm

from mtspec import config as config_lib
from mtspec import lineage, lora, memory, metrics as metrics_lib, model as model_lib, optim, phases as phases_lib
from mtspec import sharding, step as step_lib, train_state
from mtspec.checkpoint import Checkpointer, restore_from_path
from mtspec.checkpoint import checkpoint_params  # noqa: F401  (re-exported for tests)
from mtspec.data import chat, pipeline, sources as sources_lib, tokenizer as tok_lib
from mtspec.data.shards import ShardedBatches


class NonFiniteLoss(RuntimeError):
  pass


@jax.jit
def _all_finite(tree):
  return jax.numpy.all(jax.numpy.stack([jax.numpy.isfinite(x).all() for x in jax.tree.leaves(tree)]))


def primary_first(fn):
  """Runs fn on process 0, then on the others: shared files are written once."""
  if jax.process_count() == 1:
    return fn()
  from jax.experimental import multihost_utils
  if jax.process_index() == 0:
    fn()
  multihost_utils.sync_global_devices('mtspec: process 0 prepared data')
  if jax.process_index() != 0:
    fn()


def used_sources(cfg, plan) -> list[str]:
  return sorted({name for p in plan for name in p.weights})


def open_sources(cfg, names, data_dir: str) -> dict:
  return {n: sources_lib.open_source(n, cfg.sources[n], data_dir) for n in names}


def tokenizer_texts(sources: dict, per_source: int = 5000):
  """Texts to train a tokenizer on: the first records of every source, rendered."""
  for src in sources.values():
    for i in range(min(len(src), per_source)):
      r = src[i]
      yield chat.as_text(r['messages']) if src.kind == 'chat' else r['text']


def load_or_train_tokenizer(cfg, workdir: str, sources: dict) -> tok_lib.Tokenizer:
  if cfg.init.get('hf_model'):  # a Hugging Face base model brings its tokenizer and template
    from mtspec.hf.tokenizer import HFTokenizer
    tok = HFTokenizer(cfg.init.hf_model)
    tok.path = cfg.init.hf_model
  elif cfg.data.tokenizer:
    tok = tok_lib.load(cfg.data.tokenizer)
  else:
    path = os.path.join(workdir, 'tokenizer.model')
    tok = tok_lib.load(path) if os.path.exists(path) else tok_lib.train(
        tokenizer_texts(sources), cfg.model.vocab_size, path,
        special_tokens=chat.SPECIAL_TOKENS)
  if tok.vocab_size > cfg.model.vocab_size:
    raise config_lib.ConfigError(
        f'config.model.vocab_size={cfg.model.vocab_size} is smaller than the tokenizer '
        f'{tok.path} ({tok.vocab_size} pieces)')
  return tok


class Run:
  """Everything one training run needs, built once from the config (validated first)."""

  def __init__(self, cfg, workdir: str):
    config_lib.validate(cfg)
    self.plan = phases_lib.plan(cfg)
    self.cfg, self.workdir = cfg, workdir
    self.name = cfg.get('run_name') or os.path.basename(os.path.normpath(workdir))
    self.total_steps = phases_lib.total_steps(self.plan)
    self.mesh = sharding.make_mesh(cfg.mesh.shape)
    self.schedule = phases_lib.schedule(self.plan)
    self.optimizer = optim.make_optimizer(cfg.train, self.schedule)
    self.shapes = train_state.model_shapes(cfg.model)
    # With LoRA the state trains adapters; the frozen base params live outside it.
    self.trained, self.shardings, self.base_shardings, self.init_adapters = (
        train_state.trained_setup(cfg, self.mesh, self.optimizer, self.shapes))
    self.lora = self.init_adapters is not None
    self.base = None
    data_dir = cfg.data.tfds_data_dir or os.path.join(workdir, 'data')
    os.makedirs(workdir, exist_ok=True)

    def prepare():  # builds datasets and the tokenizer on disk once
      self.sources = open_sources(cfg, used_sources(cfg, self.plan), data_dir)
      self.tokenizer = load_or_train_tokenizer(cfg, workdir, self.sources)
    primary_first(prepare)
    self.checkpointer = Checkpointer(os.path.join(workdir, 'checkpoints'), cfg.train.keep_ckpts,
                                     keep_steps=[p.end for p in self.plan])
    step = step_lib.make_train_step(
        self.shapes.graphdef, self.optimizer, self.schedule, cfg.train.grad_accum,
        self.shardings, self.mesh, lora.settings(cfg),
        self.base_shardings)
    self.train_step = lambda state, batch: step(state, batch, self.base)

  def batches(self, phase):
    """This process's batches for a phase; each phase has its own example stream."""
    t, d = self.cfg.train, self.cfg.data
    n = d.num_shards or jax.process_count()
    if t.batch_size % n:
      raise config_lib.ConfigError(f'config.train.batch_size={t.batch_size} must be a multiple '
                                   f'of data.num_shards={n}')
    make = lambda s: pipeline.phase_batches(
        self.sources, phase.weights, self.tokenizer, t.seed, phase.name, t.seq_len,
        t.batch_size // n, d.block_size, s, n, d.num_threads, d.prefetch)
    return ShardedBatches(lambda s: (lambda m, ds: (m, iter(ds)))(*make(s)), n,
                          jax.process_index(), jax.process_count())

  def _hf_params(self):
    """Base weights from a Hugging Face directory, placed tensor by tensor on the mesh."""
    from mtspec.hf import load as hf_load
    hf_cfg, params = hf_load.load(self.cfg.init.hf_model, self.mesh, self.cfg.model.dtype,
                                  self.cfg.model.param_dtype)
    want = dict(train_state.flat_params(self.shapes.params))
    got = dict(train_state.flat_params(params))
    for name, leaf in want.items():
      if name not in got or tuple(got[name].shape) != tuple(leaf.shape):
        raise ValueError(f'init.hf_model={self.cfg.init.hf_model!r}: parameter {name} has shape '
                         f'{tuple(got[name].shape) if name in got else "(missing)"} there but '
                         f'{tuple(leaf.shape)} in config.model (set config.model to match)')
    return params

  def _origin(self):
    """Where the starting params come from: (params or None, parent, ancestors)."""
    init = self.cfg.init
    if init.get('hf_model'):
      return (self._hf_params(), {'path': init.hf_model, 'step': None},
              [{'run': 'huggingface', 'phase': None, 'step': None, 'path': init.hf_model}])
    if init.checkpoint:
      mode = 'params' if self.lora else init.mode  # a LoRA base is params only
      target = train_state.abstract_state(self.optimizer, self.shapes.params,
                                          train_state.state_shardings(
                                              self.mesh, self.optimizer, self.shapes))
      restored, meta = restore_from_path(init.checkpoint, target, mode)
      ancestors = meta.get('ancestors', []) + [
          {k: meta.get(k) for k in ('run', 'phase', 'step')} | {'path': init.checkpoint}]
      return restored, {'path': init.checkpoint, 'step': meta.get('step')}, ancestors
    return None, None, []

  def _frozen_base(self, origin):
    """LoRA's base: the starting params, or a seeded init when there are none."""
    if origin is not None:
      return origin['params'] if 'params' in origin else origin
    return train_state.init_params(self.cfg.model, self.cfg.train.seed, self.base_shardings)

  def start(self):
    """(state, first step, phase, batch iterator, parent, ancestors)."""
    target = train_state.abstract_state(self.optimizer, self.trained, self.shardings)
    latest = self.checkpointer.latest_step()
    if latest is not None:  # resume this run
      if self.lora:
        self.base = self._frozen_base(self._origin()[0])
      phase = phases_lib.phase_at(self.plan, latest)
      it = self.batches(phase)
      # At a boundary the next phase starts a fresh stream; inside a phase, restore it.
      data_it = it if latest > phase.start else None
      state, meta = self.checkpointer.restore(latest, target, data_it)
      parent = {'path': self.checkpointer.step_dir(latest), 'step': latest}
      return state, latest, phase, it, parent, meta.get('ancestors', [])
    origin, parent, ancestors = self._origin()
    if self.lora:
      self.base = self._frozen_base(origin)
      state = train_state.init_lora_state(self.optimizer, self.init_adapters, self.shardings)
    elif origin is None:
      state = train_state.init_state(self.cfg.model, self.optimizer, self.cfg.train.seed,
                                     self.shardings)
    else:  # no fresh init to throw away: it cost ~1.6 s a run, a third of a quick branch's
      params = origin['params'] if 'params' in origin else origin
      if 'opt_state' in origin:  # init.mode=full
        opt_state = optim.restart_schedule(origin['opt_state'])
      else:
        opt_state = jax.jit(self.optimizer.init,
                            out_shardings=self.shardings['opt_state'])(params)
      state = {'params': params, 'opt_state': opt_state,
               'step': jax.device_put(np.zeros((), np.int32), self.shardings['step'])}
    phase = self.plan[0]
    return state, 0, phase, self.batches(phase), parent, ancestors


def train(cfg, workdir: str, show_progress: bool = True, progress_position: int = 0) -> dict:
  """Runs the phase plan to its end (resuming from workdir); returns the final summary.
  progress_position: the progress bar's line (lanes side by side, mtspec.lanes)."""
  run = Run(cfg, workdir)
  t = cfg.train
  primary = jax.process_index() == 0
  if primary:
    est = memory.estimate(cfg, train_state.abstract_state(run.optimizer, run.trained,
                                                          run.shardings),
                          run.shardings, dict(run.mesh.shape),
                          (run.shapes.params, run.base_shardings) if run.lora else None)
    print(f'{run.name}: mesh {dict(run.mesh.shape)}; estimated memory: '
          f'{est.table(memory.device_gib())}', flush=True)
  state, start, phase, data_iter, parent, ancestors = run.start()
  profile = tuple(cfg.get('profile_steps', ()))
  writer = metrics_lib.MetricsWriter(workdir, enabled=primary)
  peak, peak_source = metrics_lib.peak_flops_per_device(cfg.model.dtype, t.peak_flops)
  flops_tok = model_lib.flops_per_token(cfg.model, t.seq_len)
  tokens_per_step = t.batch_size * t.seq_len
  bar = tqdm(total=run.total_steps, initial=start, desc=f'{run.name}: {phase.name}',
             dynamic_ncols=True, position=progress_position,
             disable=not (primary and show_progress))
  last, window_start, window_steps, pending = {}, None, 0, None

  def check(step_metrics, step, phase_name):
    loss = float(jax.device_get(step_metrics['loss']))
    if not np.isfinite(loss):
      raise NonFiniteLoss(
          f'loss is {loss} at step {step} (phase {phase_name!r}); the run stopped and its '
          f'last good checkpoint (step {run.checkpointer.latest_step()}) stays the latest')
    return loss

  try:
    for s in range(start, run.total_steps):
      if s >= phase.end:  # phase boundary: switch to the next phase's stream
        phase = phases_lib.phase_at(run.plan, s)
        data_iter = run.batches(phase)
        bar.set_description(f'{run.name}: {phase.name}')
      if profile and s == profile[0]:
        jax.profiler.start_trace(os.path.join(workdir, 'profile'))
      batch = sharding.to_global(next(data_iter), run.mesh)
      state, step_metrics = run.train_step(state, batch)
      if pending is not None:
        check(*pending)  # the previous step's loss, read while this step runs
      done = s + 1
      pending = (step_metrics, done, phase.name)
      if window_start is None:  # the first step compiles; throughput starts after it
        jax.block_until_ready(step_metrics)
        window_start, window_steps = time.perf_counter(), 0
      else:
        window_steps += 1
      bar.update(1)
      if profile and done == profile[1]:
        jax.block_until_ready(state)
        jax.profiler.stop_trace()  # view with TensorBoard's profile plugin
      if done % t.log_every == 0 or done == phase.end:
        check(*pending)
        m = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
        if window_steps:
          m['tokens_per_second'] = window_steps * tokens_per_step / (time.perf_counter() - window_start)
          m['mfu'] = m['tokens_per_second'] * flops_tok / (peak * jax.device_count())
        m.update({f'epoch/{n}': e for n, e in data_iter.epochs().items()}, phase_index=phase.index)
        writer.write(done, m)
        bar.set_postfix(loss=f"{m['loss']:.3f}", tok_s=f"{m.get('tokens_per_second', 0):.0f}")
        last = {'step': done, 'phase': phase.name, **m}
        window_start, window_steps = time.perf_counter(), 0
      if done % t.ckpt_every == 0 or done == phase.end:
        check(*pending)  # never save a state that came from a non-finite loss...
        if not bool(_all_finite(state['params'])):  # ...or holds non-finite params
          raise NonFiniteLoss(f'parameters became non-finite at step {done} (phase '
                              f'{phase.name!r}); the run stopped and its last good checkpoint '
                              f'(step {run.checkpointer.latest_step()}) stays the latest')
        meta = lineage.record(cfg, run.name, phase.name, done, parent, run.sources, ancestors)
        run.checkpointer.save(done, state, data_iter, meta)
        parent = {'path': run.checkpointer.step_dir(done), 'step': done}
        if done == phase.end and primary:
          _write_phase_pointer(workdir, phase.name, done, parent['path'])
    run.checkpointer.wait()
  finally:
    bar.close()
    writer.close()
    run.checkpointer.close()
  final = run.total_steps
  summary_path = os.path.join(workdir, 'summary.json')
  if not last and os.path.exists(summary_path):  # already complete: keep what it measured
    with open(summary_path) as f:
      last = json.load(f)['last_metrics']
  summary = {'run': run.name, 'step': final, 'final_checkpoint': os.path.join(
      workdir, 'checkpoints', str(final)), 'peak_flops': peak, 'peak_source': peak_source,
             'flops_per_token': flops_tok, 'last_metrics': last}
  if primary:  # whole or absent: an experiment reads it while other lanes train
    with open(summary_path + '.tmp', 'w') as f:
      json.dump(summary, f, indent=2)
    os.replace(summary_path + '.tmp', summary_path)
  return {'state': state, **summary}


def _write_phase_pointer(workdir: str, phase: str, step: int, path: str):
  """phases/<name>.json names the permanent checkpoint that ends each phase."""
  os.makedirs(os.path.join(workdir, 'phases'), exist_ok=True)
  tmp = os.path.join(workdir, 'phases', f'.{phase}.json.tmp')
  with open(tmp, 'w') as f:
    json.dump({'phase': phase, 'step': step, 'path': path}, f)
  os.replace(tmp, os.path.join(workdir, 'phases', f'{phase}.json'))

