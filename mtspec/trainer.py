"""The training loop: data -> jitted step -> metrics -> checkpoints, resumable from workdir."""
import hashlib
import json
import os
import time

import jax
import numpy as np
from tqdm import tqdm

from mtspec import config as config_lib
from mtspec import metrics as metrics_lib
from mtspec import model as model_lib
from mtspec import optim, sharding, step as step_lib, train_state
from mtspec.checkpoint import Checkpointer
from mtspec.data import pipeline, sources, tokenizer as tok_lib


class NonFiniteLoss(RuntimeError):
  pass


def config_hash(cfg) -> str:
  return hashlib.sha256(cfg.to_json(sort_keys=True).encode()).hexdigest()[:16]


def load_or_train_tokenizer(cfg, workdir: str, text_source) -> tok_lib.Tokenizer:
  if cfg.data.tokenizer:
    tok = tok_lib.load(cfg.data.tokenizer)
  else:
    path = os.path.join(workdir, 'tokenizer.model')
    if os.path.exists(path):
      tok = tok_lib.load(path)
    else:
      texts = (text_source[i] for i in range(len(text_source)))
      tok = tok_lib.train(texts, cfg.model.vocab_size, path)
  if tok.vocab_size > cfg.model.vocab_size:
    raise config_lib.ConfigError(
        f'config.model.vocab_size={cfg.model.vocab_size} is smaller than the tokenizer '
        f'{tok.path} ({tok.vocab_size} pieces)')
  return tok


class Run:
  """Everything one training run needs, built once from the config."""

  def __init__(self, cfg, workdir: str):
    config_lib.validate(cfg)
    self.cfg, self.workdir = cfg, workdir
    os.makedirs(workdir, exist_ok=True)
    self.mesh = sharding.make_mesh(cfg.mesh.shape)
    t = cfg.train
    self.schedule = optim.lr_schedule(t.lr, t.steps, t.warmup_steps, t.schedule,
                                      t.min_lr_ratio, t.decay_fraction)
    self.optimizer = optim.make_optimizer(t, self.schedule)
    self.shapes = train_state.model_shapes(cfg.model)
    self.shardings = train_state.state_shardings(self.mesh, self.optimizer, self.shapes)
    data_dir = cfg.data.tfds_data_dir or os.path.join(workdir, 'data')
    self.text_source = sources.open_text_source(cfg.data, data_dir)
    self.tokenizer = load_or_train_tokenizer(cfg, workdir, self.text_source)
    self.checkpointer = Checkpointer(os.path.join(workdir, 'checkpoints'), t.keep_ckpts)
    self.train_step = step_lib.make_train_step(self.shapes.graphdef, self.optimizer,
                                               self.schedule, t.grad_accum, self.shardings,
                                               self.mesh)

  def data_iterator(self):
    t = self.cfg.train
    local = sharding.host_local_batch(t.batch_size, self.mesh)
    ds = pipeline.text_batches(self.text_source, self.tokenizer, t.seed, t.seq_len, local,
                               jax.process_index(), jax.process_count(),
                               self.cfg.data.num_threads, self.cfg.data.prefetch)
    return iter(ds)

  def initial_state(self, data_iter):
    """Latest checkpoint in the workdir if there is one, else a fresh init."""
    latest = self.checkpointer.latest_step()
    if latest is None:
      return train_state.init_state(self.cfg.model, self.optimizer, self.cfg.train.seed,
                                    self.shardings)
    target = train_state.abstract_state(self.optimizer, self.shapes, self.shardings)
    state, _ = self.checkpointer.restore(latest, target, data_iter)
    return state

  def meta(self, step: int) -> dict:
    return {'step': step, 'config_hash': config_hash(self.cfg), 'workdir': self.workdir}


def train(cfg, workdir: str, show_progress: bool = True) -> dict:
  """Trains to cfg.train.steps (resuming from workdir) and returns the last logged metrics."""
  run = Run(cfg, workdir)
  t = cfg.train
  data_iter = run.data_iterator()
  state = run.initial_state(data_iter)
  start = int(jax.device_get(state['step']))
  primary = jax.process_index() == 0
  writer = metrics_lib.MetricsWriter(workdir, enabled=primary)
  peak, peak_source = metrics_lib.peak_flops_per_device(cfg.model.dtype, t.peak_flops)
  flops_tok = model_lib.flops_per_token(cfg.model, t.seq_len)
  tokens_per_step = t.batch_size * t.seq_len
  bar = tqdm(total=t.steps, initial=start, desc='train', disable=not (primary and show_progress),
             dynamic_ncols=True)
  last, window_start, window_steps = {}, None, 0
  pending = None  # (step, metrics) of the step in flight: checked one step late

  def check(step_metrics, step):
    loss = float(jax.device_get(step_metrics['loss']))
    if not np.isfinite(loss):
      raise NonFiniteLoss(f'loss is {loss} at step {step} (phase train); stopped, and the '
                          f'last good checkpoint ({run.checkpointer.latest_step()}) is kept')
    return loss

  try:
    for step in range(start, t.steps):
      batch = sharding.to_global(next(data_iter), run.mesh)
      state, step_metrics = run.train_step(state, batch)
      if pending is not None:
        check(*pending)
      pending = (step_metrics, step + 1)
      done = step + 1
      if window_start is None:  # the first step compiles; throughput starts after it
        jax.block_until_ready(step_metrics)
        window_start, window_steps = time.perf_counter(), 0
      else:
        window_steps += 1
      bar.update(1)
      if done % t.log_every == 0 or done == t.steps:
        m = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
        check(step_metrics, done)
        elapsed = time.perf_counter() - window_start
        if window_steps:
          m['tokens_per_second'] = window_steps * tokens_per_step / elapsed
          m['mfu'] = m['tokens_per_second'] * flops_tok / (peak * jax.device_count())
        writer.write(done, m)
        bar.set_postfix(loss=f"{m['loss']:.3f}", tok_s=f"{m.get('tokens_per_second', 0):.0f}")
        last = {'step': done, **m}
        window_start, window_steps = time.perf_counter(), 0
      if done % t.ckpt_every == 0 or done == t.steps:
        check(step_metrics, done)  # never save a state that came from a non-finite loss
        run.checkpointer.save(done, state, data_iter, run.meta(done))
    run.checkpointer.wait()
  finally:
    bar.close()
    writer.close()
    run.checkpointer.close()
  last.update(peak_flops=peak, peak_source=peak_source, flops_per_token=flops_tok)
  if primary:
    with open(os.path.join(workdir, 'summary.json'), 'w') as f:
      json.dump(last, f, indent=2)
  return {'state': state, **last}
