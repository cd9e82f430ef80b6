"""The step profiler on another config's model, with keys overridden from the command line."""

import pytest
from conftest import run_module

from mtspec import cli, profile_step


def test_profiles_a_config_files_model_with_an_override():
  out = run_module(
    [
      '-m',
      'mtspec.profile_step',
      '--config=configs/cheese_toy.py:quick',
      '--set=model.d_ff=96',
      '--steps=1',
    ]
  ).stdout
  # the quick toy model (vocab 768, width 64, 2 layers) and batch, with the MLP overridden
  assert 'model: vocab 768, width 64, 2 layers, 4 heads, MLP 96, float32; batch 16 x seq 64' in out
  assert 'step: min' in out and 'tokens/s' in out


@pytest.mark.parametrize('item', ['model.d_fff=96', 'model.d_ff=ninety', 'model.d_ff'])
def test_a_bad_override_names_itself(item):
  cfg = cli.load_config('configs/cheese_toy.py:quick')
  with pytest.raises(SystemExit, match=f"--set='{item}'"):
    profile_step.apply_overrides(cfg, [item])
  assert cfg.model.d_ff == 256  # unchanged


def test_a_missing_config_file_is_named():
  with pytest.raises(SystemExit, match="no config file 'configs/nope.py'"):
    cli.load_config('configs/nope.py:default')
