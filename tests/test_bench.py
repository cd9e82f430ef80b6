import json

from conftest import run_module


def test_bench_prints_table_and_json_line():
  out = run_module(['-m', 'mtspec.bench', '--variant=tiny', '--seq=32', '--batch=4',
                    '--warmup=1', '--steps=2', '--torch', '--data-batches=5'])
  lines = out.stdout.strip().splitlines()
  result = json.loads(lines[-1])
  for key in ('tokens_per_second', 'mfu', 'peak_flops', 'torch_tokens_per_second',
              'speedup_vs_torch', 'data_tokens_per_second', 'phase_switch_seconds'):
    assert result[key] > 0, key
  assert result['mfu'] < 1.0
  assert any(line.startswith('| mtspec') for line in lines)
  assert any('transformers + torch' in line for line in lines)


def test_huge_page_setting_is_kept_out_of_the_torch_subprocess(monkeypatch):
  from mtspec.cpu import hugepages
  monkeypatch.setenv('GLIBC_TUNABLES', f'glibc.malloc.arena_max=2:{hugepages.TUNABLE}')
  env = hugepages.env_without_tunable()
  assert env['GLIBC_TUNABLES'] == 'glibc.malloc.arena_max=2'
  assert env[hugepages.OPT_OUT] == '0'  # and the subprocess does not re-exec to add it back
