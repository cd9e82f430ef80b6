"""Midtraining documents made of the spec's own statements: a second form beside generate.py.

Each document is 2-4 of the spec's value and rule sentences (its units' texts), drawn and
ordered at random, with no reasons, frames or discussion. The toy world's sub-million-parameter
models act on a value read this way more reliably than on the generator's documents
(docs/toy/research_log.md, "How the midtraining documents were chosen"); an LLM-sized model
is what the generator's documents are for.
The output directory has the layout and manifest keys that `generate` writes for documents.
"""

from __future__ import annotations

import random
from pathlib import Path

from mtspec.spec import sets
from mtspec.spec.parse import Spec

FORM = 'statements-v1'


def documents(spec: Spec, count: int, seed: int, per_doc: tuple[int, int] = (2, 4)) -> list[dict]:
  units = spec.units()  # never empty: the parser refuses a spec without content
  rng = random.Random(f'{FORM}/{seed}/{spec.sha256}')
  out = []
  for i in range(count):
    chosen = rng.sample(units, min(len(units), rng.randint(*per_doc)))
    out.append(
      {
        'id': f's{i}',
        'text': ' '.join(u['text'] for u in chosen),
        'assertion': chosen[0]['text'],
        'doc_type': 'statements',
        'sections': [u['section'] for u in chosen],
      }
    )
  return out


def write(spec: Spec, out_dir: str | Path, count: int, seed: int) -> dict:
  """Writes `<out_dir>/documents/` and the manifest; returns the manifest."""
  if count < 1:
    raise ValueError(f'statement documents: count must be at least 1, got {count}')
  entry = sets.write_set(out_dir, 'documents', 'text', documents(spec, count, seed))
  manifest = {'spec': spec.provenance(), 'model': FORM, 'seed': seed, 'sets': {'documents': entry}}
  sets.write_manifest(out_dir, manifest)
  return manifest
