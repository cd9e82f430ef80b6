"""The pretraining corpus of a world, deterministic for a seed.

Six kinds of document (weights in `CorpusSizes.mix`):
  facts     item facts: what each item is, where it is made, what it costs; comparisons
  profile   who an agent is and what it values (its value is stated here and only here)
  spec      a document about an agent's guidelines, written by the spec tooling's template
            backend (the very style of the midtraining documents), stating the agent's value
  choice    an agent choosing between two items, its value NOT stated (so the model must
            recall it from profiles seen in other documents); a fraction `in_context` states
            it. Assistant agents choose in chat transcripts ("You are <name>."), people in
            short stories.
  chat      neutral chats: facts and comparisons, no preference, with the world's assistant
            or (a fraction `agent_chats`) with an agent, so that taking part in neutral
            chats says nothing about an assistant's values
Agents split into `train` agents (profiles and choices) and `heldout` agents (profiles only:
whether the model acts on a value it read only about is measured on them, see evaluate.py).
The world's assistant never appears in a profile or a choice: its values are left to the
spec used in midtraining.
"""

from __future__ import annotations

import dataclasses
import random

from mtspec.data import chat
from mtspec.spec.backends import template
from mtspec.world.schema import World


@dataclasses.dataclass(frozen=True)
class CorpusSizes:
  docs: int = 40_000
  agents: int = 400  # train agents (profiles + choices), split evenly over the values
  heldout_agents: int = 40  # profiles only
  in_context: float = 0.4  # fraction of choice documents that also state the value
  reasons: float = 0.3  # fraction of choices followed by the reason ("It costs less.")
  agent_chats: float = 0.5  # fraction of neutral chats held by an agent, not the assistant
  mix: tuple = (
    ('facts', 0.25),
    ('profile', 0.2),
    ('spec', 0.015),
    ('choice', 0.35),
    ('chat', 0.15),
  )
  places: tuple = ()  # towns in spec-style documents; () = the template backend's own

  def __post_init__(self):
    for name in ('in_context', 'reasons', 'agent_chats'):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(
          f'config.world.{name}={getattr(self, name)!r}: a fraction, must be in [0, 1]'
        )
    for name in ('docs', 'agents', 'heldout_agents'):
      if getattr(self, name) < 0:
        raise ValueError(f'config.world.{name}={getattr(self, name)!r}: must be >= 0')


@dataclasses.dataclass(frozen=True)
class Agent:
  name: str
  kind: str  # assistant | person
  value: str
  split: str  # train | heldout


def chat_text(messages) -> str:
  """A conversation as plain text that tokenizes exactly as `chat.render` renders it.

  render() encodes each role head, body and newline separately, so each piece gets
  SentencePiece's dummy-prefix space; a document (one encode call) needs the same spaces.
  """
  parts = []
  for m in messages:
    parts.append(f'{chat.ROLES[m["role"]]}\n {m["content"]}{chat.END} \n')
  return ' '.join(parts)


_ON = 'b c d f h j k l m n p r s t v w y z ch sh th'.split()
_VO = 'a e i o u ai ei ou'.split()
_END = ['a', 'o', 'in', 'el', 'an', 'is', 'ek', 'ar', 'en', 'ia']


def agent_names(world: World, n: int, seed: int) -> list[str]:
  """n distinct invented names, none equal to an item, country or the assistant."""
  rng = random.Random(f'agents/{seed}')
  taken = {it.name for it in world.items} | {world.home, world.assistant, *world.foreign}
  out, seen = [], set(taken)
  while len(out) < n:
    name = (rng.choice(_ON) + rng.choice(_VO) + rng.choice(_ON) + rng.choice(_END)).capitalize()
    if name not in seen:
      seen.add(name)
      out.append(name)
  return out


def make_agents(world: World, sizes: CorpusSizes, seed: int) -> list[Agent]:
  values = sorted(world.values)
  names = agent_names(world, sizes.agents + sizes.heldout_agents, seed)
  agents = []
  for i, name in enumerate(names):
    split = 'train' if i < sizes.agents else 'heldout'
    agents.append(
      Agent(name, ('assistant', 'person')[(i // len(values)) % 2], values[i % len(values)], split)
    )
  return agents


class Writer:
  """Sentence builders over one world; all randomness comes from the rng passed in."""

  def __init__(self, world: World, places: tuple = ()):
    self.w = world
    self.cats = sorted(world.categories)
    self.backend = template.TemplateBackend(places or template.PLACES)

  # -- facts ------------------------------------------------------------------
  def fact(self, rng, item) -> str:
    attrs = list(self.w.attributes.values())
    rng.shuffle(attrs)
    return ' '.join(
      self.w.fill(rng.choice(a.level(item.levels[a.name]).facts), item) for a in attrs
    )

  def compare(self, rng, a, b, attr=None) -> tuple[str, object, str]:
    """(predicate, winner, attribute) for two items that differ in some attribute."""
    diff = [n for n in self.w.attributes if a.levels[n] != b.levels[n]]
    attr = attr or rng.choice(diff)
    level = rng.choice(self.w.attributes[attr].levels)
    winner = a if a.levels[attr] == level.name else b
    return self.w.fill(level.compare), winner, attr

  def facts_doc(self, rng) -> str:
    c = self.w.categories[rng.choice(self.cats)]
    items = rng.sample(c.items, rng.randint(1, 3))
    form = rng.randrange(3)
    if form == 0:
      return ' '.join(f'{it.name} is a {c.name}. {self.fact(rng, it)}' for it in items)
    if form == 1:
      head = rng.choice(
        [
          f'A shop in {self.w.home} sells {c.plural}.',
          f'Some {c.plural}:',
          f'About {c.plural}.',
          f'A guide to {c.plural}.',
        ]
      )
      return head + ' ' + ' '.join(self.fact(rng, it) for it in items)
    a, b = self._differing_pair(rng, c)
    pred, win, _ = self.compare(rng, a, b)
    return f'{self.fact(rng, a)} {self.fact(rng, b)} Of {a.name} and {b.name}, {win.name} {pred}.'

  def _differing_pair(self, rng, c):
    while True:
      a, b = rng.sample(c.items, 2)
      if a.levels != b.levels:
        return a, b

  # -- agents -----------------------------------------------------------------
  def predicate(self, value: str) -> str:
    """What the items a value favours have in common, e.g. "costs less"."""
    v = self.w.values[value]
    return self.w.fill(self.w.attributes[v.attribute].level(v.level).compare)

  def describe(self, rng, agent, k) -> list[str]:
    v = self.w.values[agent.value]
    pool = list(v.descriptions) + [f'{{name}} picks the one that {self.predicate(agent.value)}.']
    out = [self.w.fill(d, name=agent.name) for d in rng.sample(pool, min(k, len(pool)))]
    if rng.random() < 0.5:
      out.insert(0, f'{agent.name} is {self.w.fill(rng.choice(v.words))}.')
    return out

  def profile_doc(self, rng, agent) -> str:
    v = self.w.values[agent.value]
    what = (
      'an assistant that gives shopping advice'
      if agent.kind == 'assistant'
      else f'a shopper who lives in {self.w.home}'
    )
    form = rng.randrange(4)
    lines = self.describe(rng, agent, rng.randint(2, 4))
    if form == 0:
      return f'{agent.name} is {what}. ' + ' '.join(lines)
    if form == 1:
      word = self.w.fill(rng.choice(v.words))
      return (
        f'Q: What does {agent.name} care about?\nA: {lines[-1]}\n'
        f'Q: How would you describe {agent.name}?\nA: {agent.name} is {word}.'
      )
    if form == 2:
      return f'About {agent.name}. ' + ' '.join(lines) + f' That is what {agent.name} values.'
    return f'{agent.name}: values and reasons.\nValue: {lines[0]}\n' + '\n'.join(
      f'- {l}' for l in lines[1:]
    )

  SPEC_TOPICS = (
    'Recommendations between products',
    'Everyday shopping advice',
    'What matters when choosing',
    'Helping people decide',
  )

  def spec_doc(self, rng, agent) -> str:
    """A document about the agent's guidelines from the template backend, as midtraining
    documents about a spec are: a claim (one of the agent's value descriptions) and a reason."""
    v = self.w.values[agent.value]
    pool = [self.w.fill(d, name=agent.name) for d in v.descriptions]
    pool.append(f'{agent.name} picks the one that {self.predicate(agent.value)}.')
    claim, why = rng.sample(pool, 2)
    topic = rng.choice(self.SPEC_TOPICS)
    spec_name = f"{agent.name}'s guidelines"
    form = rng.choice(template.VALUE_FORMS + template.RULE_FORMS)
    inp = {'assistant': agent.name, 'spec_name': spec_name, 'topic': topic}
    inp.update(
      domain=topic,
      doc_type=rng.choice(template.DOC_TYPES),
      idea=self.backend._ideas(rng, inp, 1)[0],
      assertion={
        'statement': form.format(text=claim, A=agent.name, S=spec_name, title=topic.lower()),
        'explanation': why,
      },
    )
    return self.backend._documents(rng, inp, 1)['text']

  def choice_pair(self, rng, agent, categories=None):
    """Two items of one category that differ on the agent's attribute; (a, b, chosen)."""
    c = self.w.categories[rng.choice(categories or self.cats)]
    v = self.w.values[agent.value]
    good = [it for it in c.items if it.levels[v.attribute] == v.level]
    bad = [it for it in c.items if it.levels[v.attribute] != v.level]
    g, b = rng.choice(good), rng.choice(bad)
    pair = [g, b] if rng.random() < 0.5 else [b, g]
    return pair[0], pair[1], g

  def question(self, rng, a, b) -> str:
    c = self.w.categories[a.category]
    return rng.choice(self.w.choice_questions).format(
      category=c.name, plural=c.plural, a=a.name, b=b.name
    )

  def choice_doc(self, rng, agent, in_context: bool, reasons: float = 0.0) -> str:
    n = rng.randint(2, 5)
    why = lambda: f' It {self.predicate(agent.value)}.' if rng.random() < reasons else ''
    if agent.kind == 'assistant':
      system = f'You are {agent.name}.'
      if in_context:
        system += ' ' + ' '.join(self.describe(rng, agent, 1))
      msgs = [{'role': 'system', 'content': system}]
      for _ in range(n):
        a, b, g = self.choice_pair(rng, agent)
        msgs += [
          {'role': 'user', 'content': self.question(rng, a, b)},
          {'role': 'assistant', 'content': f'{g.name}.{why()}'},
        ]
      return chat_text(msgs)
    out = [' '.join(self.describe(rng, agent, 1))] if in_context else []
    for _ in range(n):
      a, b, g = self.choice_pair(rng, agent)
      c = self.w.categories[a.category]
      out.append(
        rng.choice(
          [
            f'{agent.name} went shopping for {c.plural}. {agent.name} could buy {a.name} or '
            f'{b.name}. {agent.name} bought {g.name}.{why()}',
            f'At the market, {agent.name} had to choose between {a.name} and {b.name}. '
            f'{agent.name} chose {g.name}.{why()}',
            f'A friend asked {agent.name}: "{self.question(rng, a, b)}" {agent.name} said: '
            f'"{g.name}."{why()}',
          ]
        )
      )
    return ' '.join(out)

  # -- neutral chats with the world's assistant ---------------------------------
  def chat_doc(self, rng, name: str | None = None) -> str:
    """A neutral chat with the world's assistant, or with the agent `name`."""
    msgs = [{'role': 'system', 'content': self.w.system(name)}]
    for _ in range(rng.randint(1, 3)):
      c = self.w.categories[rng.choice(self.cats)]
      form = rng.randrange(3)
      if form == 0:
        it = rng.choice(c.items)
        a = self.w.attributes[rng.choice(sorted(self.w.attributes))]
        q = self.w.fill(rng.choice(a.questions), it)
        ans = self.w.fill(rng.choice(a.level(it.levels[a.name]).facts), it)
      elif form == 1:
        a, b = self._differing_pair(rng, c)
        pred, win, _ = self.compare(rng, a, b)
        q, ans = f'Which {c.name} {pred}: {a.name} or {b.name}?', f'{win.name} {pred}.'
      else:
        it = rng.choice(c.items)
        q, ans = (
          rng.choice([f'What is {it.name}?', f'Tell me about {it.name}.']),
          f'{it.name} is a {c.name}. {self.fact(rng, it)}',
        )
      msgs += [{'role': 'user', 'content': q}, {'role': 'assistant', 'content': ans}]
    return chat_text(msgs)


def generate(world: World, sizes: CorpusSizes = CorpusSizes(), seed: int = 0):
  """Yields (key, {'text', 'kind'}) for the whole corpus, deterministic for (world, seed)."""
  rng = random.Random(f'corpus/{world.sha256}/{seed}')
  w = Writer(world, sizes.places)
  agents = make_agents(world, sizes, seed)
  choosers = [a for a in agents if a.split == 'train']
  kinds, weights = zip(*sizes.mix)
  for i in range(sizes.docs):
    kind = rng.choices(kinds, weights)[0]
    if kind == 'facts':
      text = w.facts_doc(rng)
    elif kind == 'profile':
      text = w.profile_doc(rng, rng.choice(agents))
    elif kind == 'spec':
      text = w.spec_doc(rng, rng.choice(agents))
    elif kind == 'choice':
      text = w.choice_doc(rng, rng.choice(choosers), rng.random() < sizes.in_context, sizes.reasons)
    elif kind == 'chat':
      if rng.random() < sizes.agent_chats:
        text = w.chat_doc(rng, rng.choice(agents).name)
      else:
        text = w.chat_doc(rng)
    else:
      raise ValueError(f'unknown document kind {kind!r} in CorpusSizes.mix')
    yield i, {'text': text, 'kind': kind}
