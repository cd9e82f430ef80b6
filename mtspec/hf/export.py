"""Export mtspec params to a directory `transformers` loads: config.json + model.safetensors."""

import jax
import numpy as np
from jax.experimental import multihost_utils
from safetensors.numpy import save_file

from mtspec import paths, train_state
from mtspec.hf import convert

# Copied as they are from the source directory: tokenizer, chat template, generation settings.
COPIED_FILES = (
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'chat_template.jinja',
  'generation_config.json',
)


def _to_host(x) -> np.ndarray:
  # Sharded over several processes: every process gathers, only process 0 writes.
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    x = multihost_utils.process_allgather(x, tiled=True)
  return np.asarray(jax.device_get(x))


def export(
  params: dict,
  model_cfg,
  out_dir: str,
  base_config: dict | None = None,
  tokenizer_dir: str | None = None,
  dtype: str | None = None,
):
  """Writes one model.safetensors (the whole model passes through host memory once).

  base_config: the imported config.json, so keys mtspec does not model (token ids, context
  length) survive the round trip. dtype: the saved dtype (default: the params' dtype).
  """
  tensors = {}
  for name, x in train_state.flat_params(params):
    hf_name, layout = convert.hf_tensor(name)
    x_mt = _to_host(x)
    x_mt = x_mt.astype(dtype or x_mt.dtype)
    tensors[hf_name] = np.ascontiguousarray(convert.to_hf(x_mt, layout))
  if jax.process_index() != 0:
    return
  with paths.local_file(paths.join(out_dir, 'model.safetensors')) as tmp:  # writes local files
    save_file(tensors, tmp, metadata={'format': 'pt'})
  paths.write_json(
    paths.join(out_dir, 'config.json'), convert.hf_config(model_cfg, base_config, dtype), indent=2
  )
  for name in COPIED_FILES if tokenizer_dir else ():
    if paths.exists(paths.join(tokenizer_dir, name)):
      paths.write_bytes(
        paths.join(out_dir, name), paths.read_bytes(paths.join(tokenizer_dir, name))
      )


def export_adapters(
  adapters: dict, out_dir: str, alpha: float, rank: int, base_model: str = '', dropout: float = 0.0
):
  """LoRA adapters alone, in PEFT's layout (adapter_model.safetensors + adapter_config.json).

  mtspec's A is (in, rank) and B (rank, out) over the flattened dims of each weight; PEFT keeps
  lora_A.weight (rank, in) and lora_B.weight (out, rank), with HF's (heads, head_dim) order,
  which is the order the flattening uses.
  """
  tensors, modules = {}, set()
  for i, targets in adapters.items():
    for name, ab in targets.items():
      hf_name, _ = convert.hf_tensor(f'layers.{i}.{name}')
      module = hf_name.removesuffix('.weight')
      modules.add(module.rsplit('.', 1)[-1])
      prefix = f'base_model.model.{module}.lora_'
      tensors[prefix + 'A.weight'] = np.ascontiguousarray(_to_host(ab['a']).T)
      tensors[prefix + 'B.weight'] = np.ascontiguousarray(_to_host(ab['b']).T)
  if jax.process_index() != 0:
    return
  with paths.local_file(paths.join(out_dir, 'adapter_model.safetensors')) as tmp:
    save_file(tensors, tmp, metadata={'format': 'pt'})
  paths.write_json(
    paths.join(out_dir, 'adapter_config.json'),
    {
      'peft_type': 'LORA',
      'r': rank,
      'lora_alpha': alpha,
      'lora_dropout': dropout,
      'target_modules': sorted(modules),
      'bias': 'none',
      'task_type': 'CAUSAL_LM',
      'base_model_name_or_path': base_model,
    },
    indent=2,
  )
