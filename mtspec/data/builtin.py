"""The built-in corpus: generated text, stored as a real TFDS (ArrayRecord) dataset.

It lets the main command train with no download, through the very same `tfds.data_source`
path that reads C4 on a TPU VM. The text is a small invented world (towns, people, trades,
goods) written in a few templates, so a small model can learn it quickly.
"""

import random
import tempfile

import numpy as np
import tensorflow_datasets as tfds

from mtspec import paths

TOWNS = [
  'Aldmere',
  'Brisk',
  'Calloway',
  'Dunmore',
  'Elsworth',
  'Farrow',
  'Glenhollow',
  'Harrowgate',
  'Ivel',
  'Juniper Bay',
  'Kestrel',
  'Lowmarsh',
]
NAMES = [
  'Ada',
  'Bram',
  'Cora',
  'Dev',
  'Edda',
  'Finn',
  'Greta',
  'Hugo',
  'Ines',
  'Jory',
  'Kira',
  'Leo',
  'Mira',
  'Nils',
  'Orla',
  'Pip',
  'Quin',
  'Rosa',
  'Sami',
  'Tova',
]
TRADES = {
  'baker': 'bread',
  'potter': 'bowls',
  'weaver': 'cloth',
  'smith': 'nails',
  'brewer': 'cider',
  'farmer': 'apples',
  'carpenter': 'chairs',
  'fisher': 'trout',
}
WEATHER = ['rain', 'fog', 'sunshine', 'snow', 'wind']
COLOURS = ['red', 'blue', 'green', 'yellow', 'grey', 'white']
DEFAULT_DOCS = 20_000


def _fact_doc(rng: random.Random) -> str:
  name, town = rng.choice(NAMES), rng.choice(TOWNS)
  trade = rng.choice(sorted(TRADES))
  good, colour = TRADES[trade], rng.choice(COLOURS)
  n = rng.randint(2, 9)
  return (
    f'{name} lives in {town} and works as a {trade}. Every morning {name} makes {n} '
    f'batches of {good}. The door of the {trade} shop in {town} is painted {colour}. '
    f'People in {town} say the {good} of {name} is the best in the valley.'
  )


def _story_doc(rng: random.Random) -> str:
  a, b = rng.sample(NAMES, 2)
  town, weather = rng.choice(TOWNS), rng.choice(WEATHER)
  trade = rng.choice(sorted(TRADES))
  good = TRADES[trade]
  k = rng.randint(2, 6)
  return (
    f'One day in {town} there was {weather}. {a} went to the market to buy {good}. '
    f'{b}, the {trade}, had {k} baskets of {good} left. {a} bought one basket and '
    f'said thank you. Then {a} walked home through the {weather}, happy with the {good}.'
  )


def _dialogue_doc(rng: random.Random) -> str:
  name, town = rng.choice(NAMES), rng.choice(TOWNS)
  trade = rng.choice(sorted(TRADES))
  good = TRADES[trade]
  price = rng.randint(1, 12)
  return (
    f'Q: Where can I buy {good} in {town}?\nA: Ask {name}, the {trade}. '
    f'A basket of {good} costs {price} coins.\nQ: Is that a fair price?\n'
    f'A: {"Yes, it is cheap." if price < 6 else "It is pricey, but the quality is good."}'
  )


def generate(num_docs: int, seed: int = 0):
  """Yields (key, text) pairs; deterministic for a seed."""
  rng = random.Random(seed)
  makers = (_fact_doc, _story_doc, _dialogue_doc)
  for i in range(num_docs):
    yield i, makers[i % len(makers)](rng)


class MtspecBuiltin(tfds.core.GeneratorBasedBuilder):
  """Built-in corpus; the config name carries the document count, e.g. `docs20000`."""

  VERSION = tfds.core.Version('1.0.0')
  BUILDER_CONFIGS = []  # configs are created on demand by `prepare`

  def _info(self):
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict({'text': tfds.features.Text()})
    )

  def _split_generators(self, dl_manager):
    n = int(self.builder_config.name.removeprefix('docs'))
    n_val = max(1, n // 50)
    return {
      'train': self._generate_examples(n, seed=0),
      'validation': self._generate_examples(n_val, seed=1),
    }

  def _generate_examples(self, n, seed):
    for i, text in generate(n, seed):
      yield i, {'text': text}


def prepare(data_dir: str, num_docs: int) -> tfds.core.DatasetBuilder:
  """Builds the dataset under data_dir once (ArrayRecord files); later calls reuse it."""
  config = tfds.core.BuilderConfig(name=f'docs{num_docs}')
  return build(
    lambda d: MtspecBuiltin(
      config=config, data_dir=d, file_format=tfds.core.FileFormat.ARRAY_RECORD
    ),
    data_dir,
    download_config=tfds.download.DownloadConfig(verify_ssl=False),
  )


def build(make_builder, data_dir: str, **prepare_kwargs) -> tfds.core.DatasetBuilder:
  """The builder make_builder(data_dir), its dataset prepared under data_dir once.

  ArrayRecord writes local files only, so for a gs:// data_dir the dataset is built in a
  local temporary directory and copied up, dataset_info.json last: its presence means the
  copy is whole. Reading from gs:// is array_record's own."""
  tfds.disable_progress_bar()
  builder = make_builder(data_dir)
  if not paths.is_remote(data_dir):
    builder.download_and_prepare(**prepare_kwargs)
    return builder
  if paths.exists(paths.join(builder.data_dir, 'dataset_info.json')):
    return builder
  with tempfile.TemporaryDirectory(prefix='mtspec_tfds_') as tmp:
    local = make_builder(tmp)
    local.download_and_prepare(**prepare_kwargs)
    paths.copy_tree(local.data_dir, builder.data_dir, last=('dataset_info.json',))
  return make_builder(data_dir)  # reads the dataset info just written


def ensure_numpy_text(x) -> str:
  return x.decode('utf-8') if isinstance(x, (bytes, np.bytes_)) else str(x)
