"""A world's pretraining corpus as a real TFDS dataset (ArrayRecord), built locally.

`prepare(world, data_dir, sizes, seed)` builds `mtspec_world/<config>` once under data_dir
and returns the source URI `tfds:mtspec_world/<config>`: training reads it through
`tfds.data_source`, the very path that reads C4 on a TPU VM. The config name carries the
world's name and a hash of (world file, sizes, seed), so a changed world is a new dataset.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import tensorflow_datasets as tfds

from mtspec.data import builtin
from mtspec.world import corpus as corpus_lib
from mtspec.world import schema

NAME = 'mtspec_world'


@dataclasses.dataclass
class WorldConfig(tfds.core.BuilderConfig):
  world_path: str = ''
  seed: int = 0
  sizes: corpus_lib.CorpusSizes = dataclasses.field(default_factory=corpus_lib.CorpusSizes)


class MtspecWorld(tfds.core.GeneratorBasedBuilder):
  """The toy world's pretraining corpus; one config per (world, sizes, seed)."""

  VERSION = tfds.core.Version('1.0.0')
  BUILDER_CONFIGS = []  # made on demand by `prepare`

  def _info(self):
    return self.dataset_info_from_configs(
      description='Item facts, agent profiles and choices, and neutral assistant chats '
      'generated from a world file (mtspec.world.corpus).',
      features=tfds.features.FeaturesDict(
        {'text': tfds.features.Text(), 'kind': tfds.features.Text()}
      ),
    )

  def _split_generators(self, dl_manager):
    cfg = self.builder_config
    world = schema.load(cfg.world_path)
    val = dataclasses.replace(cfg.sizes, docs=max(1, cfg.sizes.docs // 50))
    return {
      'train': self._generate_examples(world, cfg.sizes, cfg.seed),
      'validation': self._generate_examples(world, val, cfg.seed + 10_007),
    }

  def _generate_examples(self, world, sizes, seed):
    yield from corpus_lib.generate(world, sizes, seed)


def config_name(world: schema.World, sizes: corpus_lib.CorpusSizes, seed: int) -> str:
  knobs = dataclasses.asdict(sizes)
  if not knobs['places']:  # unset: the same names as before the knob existed
    del knobs['places']
  # two retired knobs, at the values they always had, so existing datasets keep their names
  knobs.update(neutral_agents=0, assistant_choices=0.0)
  blob = json.dumps([world.sha256, knobs, seed], sort_keys=True)
  return f'{world.name}_{hashlib.sha256(blob.encode()).hexdigest()[:10]}'


def prepare(
  world: schema.World, data_dir: str, sizes: corpus_lib.CorpusSizes, seed: int = 0
) -> str:
  """Builds the dataset under data_dir (once; later calls reuse it); returns its URI."""
  name = config_name(world, sizes, seed)
  config = WorldConfig(name=name, world_path=world.path, seed=seed, sizes=sizes)
  builtin.build(
    lambda d: MtspecWorld(config=config, data_dir=d, file_format=tfds.core.FileFormat.ARRAY_RECORD),
    data_dir,
  )
  return f'tfds:{NAME}/{name}'
