"""Command line for spec tooling.

  python -m mtspec.spec generate --spec=configs/specs/general_assistant.md --out=/tmp/ga
  python -m mtspec.spec inspect --out=/tmp/ga
  python -m mtspec.spec validate --spec=configs/specs/cheese_home.md --set home_country=Norland
  python -m mtspec.spec contamination --eval=E.array_record --train=T.array_record --max-rate=0

Exit codes: 0 ok, 1 generation failed, 2 bad spec or arguments (or --out in use by
another generate), 3 contamination.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import logging
import sys
import textwrap

from mtspec import workdir
from mtspec.spec import backends, contamination, sets
from mtspec.spec.generate import Counts, Options, generate
from mtspec.spec.parse import SpecError, parse_file

COUNT_FIELDS = [f.name for f in dataclasses.fields(Counts)]


def _overrides(pairs: list[str]) -> dict:
  out = {}
  for p in pairs:
    key, sep, value = p.partition('=')
    if not sep or not key:
      raise SystemExit(f'error: --set expects key=value, got {p!r}')
    out[key] = value
  return out


def _parser() -> argparse.ArgumentParser:
  ap = argparse.ArgumentParser(
    prog='python -m mtspec.spec',
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  sub = ap.add_subparsers(dest='cmd', required=True)

  def spec_args(p):
    p.add_argument('--spec', required=True, help='spec markdown file')
    p.add_argument(
      '--set',
      action='append',
      default=[],
      metavar='KEY=VALUE',
      help='fill or override a front matter value, e.g. home_country=Norland',
    )

  spec_args(sub.add_parser('validate', help='parse and validate a spec'))
  g = sub.add_parser('generate', help='generate documents, AFT chats and eval items')
  spec_args(g)
  g.add_argument('--out', required=True, help='output directory (re-run to resume)')
  g.add_argument('--backend', default='template', choices=backends.NAMES)
  g.add_argument('--model', help='model name for HTTP backends')
  g.add_argument('--base-url', help='API base URL (else MTSPEC_<BACKEND>_BASE_URL)')
  g.add_argument('--seed', type=int, default=0)
  for f in COUNT_FIELDS:
    g.add_argument(f'--{f.replace("_", "-")}', type=int, default=getattr(Counts(), f))
  g.add_argument('--reasoning', default='keep', choices=('keep', 'inline', 'drop'))
  g.add_argument('--dedup-threshold', type=float, default=Options.dedup_threshold)
  g.add_argument('--concurrency', type=int, default=8)
  g.add_argument('--timeout', type=float, default=120.0, help='seconds per HTTP request')
  g.add_argument('--max-retries', type=int, default=6)
  g.add_argument(
    '--backoff',
    type=float,
    default=1.0,
    help='first wait before retrying an unreadable 200 reply, doubling (the SDKs time their own retries)',
  )
  g.add_argument('--max-tokens', type=int, default=2048)
  g.add_argument('--temperature', type=float, default=1.0)
  g.add_argument('--price-in', type=float, help='USD per million input tokens')
  g.add_argument('--price-out', type=float, help='USD per million output tokens')
  g.add_argument(
    '--batch',
    action='store_true',
    help="anthropic: send each stage's requests as Message Batches (half price); "
    'a rerun re-attaches to the batches a killed run left in flight',
  )
  g.add_argument(
    '--poll-interval', type=float, default=30.0, help='seconds between polls of an unfinished batch'
  )
  g.add_argument(
    '--max-batch-requests',
    type=int,
    default=100_000,
    help='requests per batch (the API allows at most 100,000)',
  )
  g.add_argument(
    '--batch-attempts',
    type=int,
    default=3,
    help='submissions of a request whose batch result errored, expired or was '
    'canceled, before it is reported as failed',
  )

  i = sub.add_parser('inspect', help='summarise a generated output directory')
  i.add_argument('--out', required=True)
  i.add_argument('--samples', type=int, default=1, help='samples per document type')

  c = sub.add_parser('contamination', help='n-gram overlap of eval items with training sets')
  c.add_argument('--eval', required=True, help='eval .array_record')
  c.add_argument('--train', required=True, action='append', help='.array_record (repeatable)')
  c.add_argument('--max-rate', type=float, default=0.0)
  c.add_argument('--n', type=int, default=8)
  return ap


def _generate(a) -> None:
  spec = parse_file(a.spec, _overrides(a.set))
  prices = (a.price_in, a.price_out) if a.price_in is not None else None
  http = dict(
    model=a.model,
    base_url=a.base_url,
    concurrency=a.concurrency,
    timeout=a.timeout,
    max_retries=a.max_retries,
    backoff=a.backoff,
    max_tokens=a.max_tokens,
    temperature=a.temperature,
    prices=prices,
  )
  if a.batch:
    http.update(
      poll_interval=a.poll_interval,
      max_batch_requests=a.max_batch_requests,
      batch_attempts=a.batch_attempts,
    )
  backend = backends.make(a.backend, f'{a.out}/cache', batch=a.batch, **http)
  counts = Counts(**{f: getattr(a, f) for f in COUNT_FIELDS})
  m = generate(spec, a.out, backend, counts, Options(a.seed, a.dedup_threshold, a.reasoning))
  for name, s in m['sets'].items():
    print(
      f'{name}: {s["count"]} {s["kind"]} records, {s["tokens"]} tokens '
      f'({s["dropped_near_duplicates"]} near-duplicates dropped) -> {a.out}/{s["path"]}'
    )
  print(
    f'contamination: max rate {m["contamination"]["max_rate"]:.3f} ({m["contamination"]["n"]}-gram)'
  )
  print('usage:', json.dumps(backend.usage()))


def _inspect(a) -> None:
  m = sets.load_manifest(a.out)
  print(
    f'spec {m["spec"]["name"]} ({m["spec"]["path"]}, sha256 {m["spec"]["sha256"][:12]}) '
    f'backend {m["backend"]} model {m["model"]} seed {m["seed"]}'
  )
  for name, s in m['sets'].items():
    print(
      f'  {name:10s} {s["kind"]:5s} {s["count"]:6d} records {s["tokens"]:9d} tokens '
      f'(dropped {s["dropped_near_duplicates"]} near-dups)'
    )
  print(f'  usage {json.dumps(m["usage"])}')
  print(f'  contamination max rate {m["contamination"]["max_rate"]:.3f}')
  docs = sets.load_records(f'{a.out}/{m["sets"]["documents"]["path"]}')
  by_type = collections.defaultdict(list)
  for d in docs:
    by_type[d['doc_type']].append(d)
  print('documents per type:')
  for t, ds in sorted(by_type.items()):
    tokens = sum(len(d['text'].split()) for d in ds)
    print(f'  {t:22s} {len(ds):5d} docs {tokens:8d} tokens')
    for d in ds[: a.samples]:
      print(textwrap.indent(textwrap.shorten(d['text'], 300), '      | '))
  for name in ('aft', 'eval'):
    recs = sets.load_records(f'{a.out}/{m["sets"][name]["path"]}')[: a.samples]
    for r in recs:
      print(f'{name} sample:', textwrap.shorten(json.dumps(r, ensure_ascii=False), 400))


def main(argv: list[str] | None = None) -> int:
  logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
  # Batches can take hours: say what was created, re-attached and ended.
  logging.getLogger('mtspec.spec.batch').setLevel(logging.INFO)
  ap = _parser()
  a = ap.parse_args(argv)
  if a.cmd == 'generate' and a.batch and a.backend != 'anthropic':
    ap.error('--batch needs --backend=anthropic (the Message Batches API)')
  try:
    if a.cmd == 'validate':
      spec = parse_file(a.spec, _overrides(a.set))
      print(
        f'{a.spec}: ok: {len(spec.sections)} sections, {len(spec.units())} units '
        f'(rules/values), sha256 {spec.sha256[:12]}'
      )
    elif a.cmd == 'generate':
      with workdir.lock(a.out):
        _generate(a)
    elif a.cmd == 'inspect':
      _inspect(a)
    else:
      report = contamination.assert_clean(a.eval, a.train, a.max_rate, a.n)
      print(json.dumps(report, indent=2))
  except SpecError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  except contamination.ContaminationError as e:
    print(f'error: {e}', file=sys.stderr)
    return 3
  except (backends.GenerationError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  except workdir.WorkdirInUse as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
