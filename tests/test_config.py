import pytest
from conftest import run_module

from mtspec import cli, config


@pytest.mark.parametrize(
  'key,value,match',
  [
    ('model.n_heads', 5, 'config.model.n_heads=5: must divide model.d_model=64'),
    ('model.n_kv_heads', 3, 'config.model.n_kv_heads=3: must divide model.n_heads=4'),
    ('model.dtype', 'float8', 'config.model.dtype'),
    ('model.remat', 'some', 'config.model.remat'),
    ('train.grad_accum', 3, 'config.train.grad_accum=3: must divide train.batch_size=8'),
    ('phases.train.warmup_steps', 1000, 'config.phases.train.warmup_steps=1000'),
    ('phases.train.schedule', 'linear', 'config.phases.train.schedule'),
    ('phases.train.steps', 0, 'config.phases.train.steps=0'),
    ('train.seq_len', 0, 'config.train.seq_len=0'),
    ('init.mode', 'weights', 'config.init.mode'),
    ('mesh.shape', (2, 2, 1), 'config.mesh.shape: mesh.shape (2, 2, 1) needs 4 devices'),
  ],
)
def test_impossible_values_name_the_key(tiny_config, key, value, match):
  *path, name = key.split('.')
  node = tiny_config
  for part in path:
    node = node[part]
  node[name] = value
  with pytest.raises(config.ConfigError, match=match.replace('(', r'\(').replace(')', r'\)')):
    config.validate(tiny_config, n_devices=1)


def test_batch_must_split_over_data_shards(tiny_config):
  tiny_config.mesh.shape = (1, -1, 1)
  tiny_config.train.batch_size = 6
  with pytest.raises(config.ConfigError, match='config.train.batch_size=6'):
    config.validate(tiny_config, n_devices=4)


def test_cli_rejects_unknown_key_and_bad_value_before_compiling(tmp_path):
  bad_key = run_module(
    [
      '-m',
      'mtspec.main',
      '--config=configs/lm.py:tiny',
      f'--workdir={tmp_path}/a',
      '--config.train.stepz=5',
    ],
    check=False,
  )
  assert bad_key.returncode == 2
  assert bad_key.stderr.strip().splitlines() == [  # one line, no traceback
    'error: config.train.stepz: no such key (did you mean config.train.eps? config.train has: '
    'b1, b2, batch_size, ckpt_every, eps, grad_accum, grad_clip, keep_ckpts, log_every, '
    'peak_flops, seed, seq_len, weight_decay)'
  ]
  bad_value = run_module(
    [
      '-m',
      'mtspec.main',
      '--config=configs/lm.py:tiny',
      f'--workdir={tmp_path}/b',
      '--config.model.n_heads=7',
    ],
    check=False,
  )
  assert bad_value.returncode == 2
  assert 'config.model.n_heads=7' in bad_value.stderr
  assert not (tmp_path / 'b' / 'checkpoints').exists()  # failed before any work


def test_unknown_key_names_the_path_and_the_nearest_keys(tiny_config):
  assert cli.unknown_key(tiny_config, 'train.seed') is None
  msg = cli.unknown_key(tiny_config, 'phases.train.stesp')
  assert msg.startswith(
    'config.phases.train.stesp: no such key (did you mean config.phases.train.steps?'
  )
  assert cli.unknown_key(tiny_config, 'trian.seed').startswith('config.trian: no such key')
  assert 'is a value, not a group' in cli.unknown_key(tiny_config, 'train.seed.x')
