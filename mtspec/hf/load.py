"""Import a Hugging Face model directory straight onto a mesh, one tensor at a time.

Each device's callback reads only the HF rows of its own block (safetensors slices are
memory-mapped), so no host ever holds the whole model, nor even one whole tensor when sharded.
"""

import contextlib
import os

import jax
from safetensors import safe_open

from mtspec import paths, train_state
from mtspec.hf import convert


def read_config(model_dir: str) -> dict:
  path = paths.join(model_dir, 'config.json')
  if not paths.exists(path):
    raise FileNotFoundError(f'no config.json in Hugging Face model directory {model_dir}')
  return paths.read_json(path)


def tensor_files(model_dir: str) -> dict[str, str]:
  """HF tensor name -> safetensors path, from the shard index or from the files themselves."""
  index = paths.join(model_dir, 'model.safetensors.index.json')
  if paths.exists(index):
    weight_map = paths.read_json(index)['weight_map']
    return {k: paths.join(model_dir, v) for k, v in weight_map.items()}
  files = paths.glob(model_dir, '*.safetensors')
  if not files:
    raise FileNotFoundError(f'no *.safetensors files in {model_dir}')
  names = {}
  for path in files:
    with safe_open(path, 'np') as f:
      names.update(dict.fromkeys(f.keys(), path))
  return names


def _check_nothing_dropped(files: dict, used: set, cfg, model_dir: str):
  """A tensor we would not load means the math differs (an extra bias, say): refuse."""
  ignorable = {'lm_head.weight'} if cfg.tie_embeddings else set()
  extra = sorted(
    n for n in files if n not in used and n not in ignorable and not convert.IGNORED_HF.fullmatch(n)
  )
  if extra:
    raise convert.HFConversionError(
      f'{model_dir} has tensors mtspec cannot represent: '
      f'{", ".join(extra[:8])}{" ..." if len(extra) > 8 else ""}'
    )


def _missing(hf_name: str, name: str, files: dict, model_dir: str) -> Exception:
  file_set = ', '.join(sorted({os.path.basename(p) for p in files.values()}))
  if paths.exists(paths.join(model_dir, 'model.safetensors.index.json')):
    file_set = f'model.safetensors.index.json: {file_set}'
  return convert.HFConversionError(
    f'tensor {hf_name} (for mtspec parameter {name}) is missing from {model_dir} [{file_set}]'
  )


def load(model_dir: str, mesh, dtype: str | None = None, param_dtype: str | None = None):
  """-> (model ConfigDict, params dict placed with train_state.param_shardings(mesh, ...)).
  A gs:// model_dir is copied to this machine first: safetensors memory-maps local files."""
  cfg = convert.model_config(read_config(model_dir), dtype, param_dtype)
  shapes = train_state.model_shapes(cfg)
  shardings = train_state.param_shardings(mesh, shapes)
  files = tensor_files(paths.local_copy(model_dir))
  hf_names = {name: convert.hf_tensor(name) for name, _ in train_state.flat_params(shapes.params)}
  _check_nothing_dropped(files, {n for n, _ in hf_names.values()}, cfg, model_dir)

  with contextlib.ExitStack() as stack:
    handles = {}

    def place(path, abstract, sharding):
      name = '.'.join(str(k.key) for k in path)
      hf_name, layout = hf_names[name]
      if hf_name not in files:
        raise _missing(hf_name, name, files, model_dir)
      if files[hf_name] not in handles:
        handles[files[hf_name]] = stack.enter_context(safe_open(files[hf_name], 'np'))
      tensor = handles[files[hf_name]].get_slice(hf_name)
      want, got = convert.hf_shape(layout, abstract.shape), tuple(tensor.get_shape())
      if got != want:
        raise convert.HFConversionError(
          f'shape mismatch for parameter {name}: config.json implies {hf_name} of shape '
          f'{want} (mtspec {tuple(abstract.shape)}), but the file has {got}'
        )
      read = lambda index: convert.read_block(
        tensor.__getitem__, layout, abstract.shape, index
      ).astype(abstract.dtype)
      return jax.make_array_from_callback(abstract.shape, sharding, read)

    params = jax.tree_util.tree_map_with_path(place, shapes.params, shardings)
  return cfg, params


def load_for(model_cfg, model_dir: str, mesh) -> dict:
  """The params of model_dir for a model configured as model_cfg, whose shapes must match."""
  _, params = load(model_dir, mesh, model_cfg.dtype, model_cfg.param_dtype)
  got = dict(train_state.flat_params(params))
  for name, leaf in train_state.flat_params(train_state.model_shapes(model_cfg).params):
    if name not in got or tuple(got[name].shape) != tuple(leaf.shape):
      raise ValueError(
        f'init.hf_model={model_dir!r}: parameter {name} has shape '
        f'{tuple(got[name].shape) if name in got else "(missing)"} there but '
        f'{tuple(leaf.shape)} in config.model (set config.model to match)'
      )
  return params
