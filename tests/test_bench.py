import json

from conftest import run_module


def test_bench_ends_with_a_json_line_of_its_results():
  out = run_module(
    [
      '-m',
      'mtspec.bench',
      '--variant=tiny',
      '--seq=32',
      '--batch=4',
      '--warmup=1',
      '--steps=2',
      '--torch',
      '--data-batches=5',
    ]
  )
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert (result['variant'], result['seq_len'], result['batch']) == ('tiny', 32, 4)
  for key in (
    'tokens_per_second',
    'mfu',
    'peak_flops',
    'torch_tokens_per_second',
    'speedup_vs_torch',
    'data_tokens_per_second',
    'phase_switch_seconds',
  ):
    assert result[key] > 0, key  # torch's, from its own process, among them
  assert result['mfu'] < 1.0


def test_huge_page_setting_is_kept_out_of_the_torch_subprocess(monkeypatch):
  from mtspec.cpu import hugepages

  monkeypatch.setenv('GLIBC_TUNABLES', f'glibc.malloc.arena_max=2:{hugepages.TUNABLE}')
  env = hugepages.env_without_tunable()
  assert env['GLIBC_TUNABLES'] == 'glibc.malloc.arena_max=2'
  assert env[hugepages.OPT_OUT] == '0'  # and the subprocess does not re-exec to add it back
