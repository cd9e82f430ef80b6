"""Model Spec markdown -> typed `Spec`, with validation errors that name file and line.

Format (see docs/spec_tooling.md):

    ---                         optional front matter, `key: value` per line
    name: General assistant
    assistant: Sol
    ---
    # Honesty {#honesty}        a heading starts a section; `{#id}` overrides the slug id
    Prose paragraphs are the explanation behind the section.
    Value: what the assistant cares about here.
    - A rule. Why: the reason for it (or on an indented next line).

`{{key}}` in the body is filled from front matter (or overrides), so one spec can
serve several toy worlds, e.g. `{{home_country}}`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

from mtspec import paths

_HEADING = re.compile(r'^(#{1,6})(?:\s+(.*?))?\s*(?:\{#([A-Za-z0-9_-]+)\})?\s*#*\s*$')
_BULLET = re.compile(r'^(?:[-*+]|\d+[.)])\s+(.*)$')
_FRONT_KEY = re.compile(r'^([A-Za-z_][A-Za-z0-9_]*)\s*:\s*(.*?)\s*$')
_PLACEHOLDER = re.compile(r'\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}')
_WHY = re.compile(r'(?:^|\s)Why:\s*')


class SpecError(ValueError):
  """A spec problem, printed as `path:line: message` like a compiler error."""

  def __init__(self, path: str, line: int, message: str):
    super().__init__(f'{path}:{line}: {message}')
    self.path, self.line, self.message = path, line, message


@dataclasses.dataclass(frozen=True)
class Rule:
  text: str
  why: str = ''
  line: int = dataclasses.field(default=0, compare=False)


@dataclasses.dataclass(frozen=True)
class Section:
  id: str
  title: str
  level: int
  parent: str | None
  explanation: tuple[str, ...] = ()  # prose paragraphs, in order
  values: tuple[str, ...] = ()
  rules: tuple[Rule, ...] = ()
  line: int = dataclasses.field(default=0, compare=False)

  def has_body(self) -> bool:
    return bool(self.explanation or self.values or self.rules)


@dataclasses.dataclass(frozen=True)
class Spec:
  meta: dict
  intro: tuple[str, ...]
  sections: tuple[Section, ...]
  path: str = dataclasses.field(default='<string>', compare=False)
  sha256: str = dataclasses.field(default='', compare=False)

  @property
  def name(self) -> str:
    return self.meta.get('name') or Path(self.path).stem

  @property
  def assistant(self) -> str:
    return self.meta.get('assistant') or 'the assistant'

  def provenance(self) -> dict:
    """What a generated set's manifest records about the spec it came from."""
    return {
      'path': self.path,
      'name': self.name,
      'sha256': self.sha256,
      'assistant': self.assistant,
      'meta': self.meta,
    }

  def section(self, sid: str) -> Section:
    return next(s for s in self.sections if s.id == sid)

  def section_text(self, sid: str) -> str:
    """The markdown a section covers (its own body, not its subsections)."""
    return '\n'.join(_render_section(self.section(sid))).strip()

  def units(self) -> list[dict]:
    """Each rule, value, or prose-only section as one unit the generators expand."""
    out = []
    for s in self.sections:
      why = s.explanation[0] if s.explanation else (s.values[0] if s.values else '')
      for i, v in enumerate(s.values):
        out.append(
          dict(
            id=f'{s.id}/v{i}',
            section=s.id,
            title=s.title,
            kind='value',
            text=v,
            why=s.explanation[0] if s.explanation else '',
          )
        )
      for i, r in enumerate(s.rules):
        out.append(
          dict(
            id=f'{s.id}/r{i}',
            section=s.id,
            title=s.title,
            kind='rule',
            text=r.text,
            why=r.why or why,
          )
        )
      if not s.values and not s.rules and s.explanation:
        out.append(
          dict(
            id=f'{s.id}/e0',
            section=s.id,
            title=s.title,
            kind='explanation',
            text=s.explanation[0],
            why=' '.join(s.explanation[1:2]),
          )
        )
    return out


def slugify(title: str) -> str:
  return re.sub(r'[^a-z0-9]+', '-', title.lower()).strip('-') or 'section'


def parse_file(path: str | Path, overrides: dict | None = None) -> Spec:
  data = paths.read_bytes(path)
  try:
    text = data.decode('utf-8')
  except UnicodeDecodeError as e:
    raise SpecError(str(path), data[: e.start].count(b'\n') + 1, 'file is not UTF-8') from e
  return parse_text(text, str(path), overrides, sha=hashlib.sha256(data).hexdigest())


def parse_text(
  text: str, path: str = '<string>', overrides: dict | None = None, sha: str | None = None
) -> Spec:
  lines = text.splitlines()
  meta, start = _front_matter(lines, path)
  meta.update(overrides or {})
  intro, sections = _body(lines, start, meta, path)
  if not sections:
    raise SpecError(
      path,
      min(start + 1, max(len(lines), 1)),
      "spec is empty: no sections (start one with a '# Heading')",
    )
  seen: dict[str, int] = {}
  for s in sections:
    if s.id in seen:
      raise SpecError(
        path,
        s.line,
        f"duplicate section id '{s.id}' (first at line "
        f"{seen[s.id]}); give one an explicit id with '{{#other-id}}'",
      )
    seen[s.id] = s.line
  children = {s.parent for s in sections}
  for s in sections:
    if not s.has_body() and s.id not in children:
      raise SpecError(path, s.line, f"section '{s.title}' has no content")
  return Spec(
    meta,
    tuple(intro),
    tuple(sections),
    path,
    sha or hashlib.sha256(text.encode('utf-8')).hexdigest(),
  )


def _front_matter(lines: list[str], path: str) -> tuple[dict, int]:
  if not lines or lines[0].strip() != '---':
    return {}, 0
  end = next((i for i in range(1, len(lines)) if lines[i].strip() == '---'), None)
  if end is None:
    raise SpecError(path, 1, "front matter opened with '---' is never closed")
  meta: dict[str, str] = {}
  for i in range(1, end):
    raw = lines[i].strip()
    if not raw or raw.startswith('#'):
      continue
    m = _FRONT_KEY.match(raw)
    if not m:
      raise SpecError(path, i + 1, f"malformed front matter line {raw!r}: expected 'key: value'")
    key, value = m.group(1), m.group(2).strip('"\'')
    if key in meta:
      raise SpecError(path, i + 1, f"front matter key '{key}' given twice")
    if not value:
      raise SpecError(path, i + 1, f"front matter key '{key}' has no value")
    meta[key] = value
  return meta, end + 1


def _fill(line: str, meta: dict, path: str, lineno: int) -> str:
  def sub(m):
    if m.group(1) not in meta:
      raise SpecError(path, lineno, f"placeholder '{{{{{m.group(1)}}}}}' has no front matter value")
    return meta[m.group(1)]

  return _PLACEHOLDER.sub(sub, line)


class _Builder:
  """Collects one section's paragraphs, values and rules as lines stream past."""

  def __init__(self, sid, title, level, parent, line, path):
    self.head, self.path = (sid, title, level, parent, line), path
    self.prose, self.values, self.rules = [], [], []
    self.para: list[str] = []
    self.rule: list = []  # [text_parts, line]

  def flush(self):
    if self.rule:
      text = ' '.join(self.rule[0])
      parts = _WHY.split(text, maxsplit=1)
      if not parts[0].strip():  # a reason with nothing it explains would train on an empty rule
        raise SpecError(self.path, self.rule[1], "rule has no text (only a 'Why:')")
      self.rules.append(
        Rule(parts[0].strip(), parts[1].strip() if len(parts) > 1 else '', self.rule[1])
      )
      self.rule = []
    if self.para:
      text = ' '.join(self.para)
      if text.startswith('Value:'):
        self.values.append(text[len('Value:') :].strip())
      else:
        self.prose.append(text)
      self.para = []

  def build(self) -> Section:
    self.flush()
    sid, title, level, parent, line = self.head
    return Section(
      sid, title, level, parent, tuple(self.prose), tuple(self.values), tuple(self.rules), line
    )


def _body(lines, start, meta, path):
  intro = _Builder('', '', 0, None, 0, path)
  cur, sections, stack = intro, [], []  # stack: (level, id) of open headings
  fenced = False
  for i in range(start, len(lines)):
    n = i + 1
    line = _fill(lines[i].rstrip(), meta, path, n)
    if line.lstrip().startswith('```'):
      fenced = not fenced
    m = None if fenced else _HEADING.match(line)
    if m:
      if cur is not intro:
        sections.append(cur.build())
      else:
        cur.flush()
      level, title = len(m.group(1)), (m.group(2) or '').strip()
      if not title:
        raise SpecError(path, n, 'heading has no title')
      while stack and stack[-1][0] >= level:
        stack.pop()
      sid = m.group(3) or slugify(title)
      cur = _Builder(sid, title, level, stack[-1][1] if stack else None, n, path)
      stack.append((level, sid))
      continue
    b = None if fenced else _BULLET.match(line.strip())
    if not fenced and line.strip() in ('-', '*', '+'):
      raise SpecError(path, n, "empty bullet: write the rule after the '-'")
    if not line.strip():
      cur.flush()
    elif b and not line.startswith((' ', '\t')):
      cur.flush()
      cur.rule = [[b.group(1).strip()], n]
    elif cur.rule:  # indented continuation of a bullet
      cur.rule[0].append(line.strip())
    else:
      cur.para.append(line.strip())
  if fenced:
    raise SpecError(path, len(lines), 'code fence opened with ``` is never closed')
  if cur is not intro:
    sections.append(cur.build())
  return intro.build().explanation, sections


def _render_section(s: Section) -> list[str]:
  anchor = '' if s.id == slugify(s.title) else f' {{#{s.id}}}'
  out = [f'{"#" * s.level} {s.title}{anchor}', '']
  out += [x for p in s.explanation for x in (p, '')]
  out += [x for v in s.values for x in (f'Value: {v}', '')]
  for r in s.rules:
    out.append(f'- {r.text}' + (f'\n  Why: {r.why}' if r.why else ''))
  return out + ([''] if s.rules else [])


def render(spec: Spec) -> str:
  """Canonical markdown for a spec; `parse_text(render(s)) == s` (the round trip)."""
  out = []
  if spec.meta:
    out += ['---', *(f'{k}: {v}' for k, v in spec.meta.items()), '---', '']
  out += [x for p in spec.intro for x in (p, '')]
  for s in spec.sections:
    out += _render_section(s)
  return '\n'.join(out).rstrip() + '\n'
