"""Checks that mtspec's imports run one way: run by scripts/test.sh (so in CI).

Fails, naming the modules, when
- a module under mtspec/ imports the repo-root `configs` (configs build on mtspec, never back),
- the import graph of mtspec's modules has a cycle, counting imports inside functions too
  (a lazy import hides a cycle from Python, not from a reader),
- a module outside mtspec/cpu/ imports mtspec.cpu at module level (the accelerator path must
  never load the CPU-only machinery; it is chosen by config, inside a function).

  python scripts/check_imports.py [package_dir]    # default: mtspec/ of this checkout
"""

import ast
import pathlib
import sys


def module_name(path: pathlib.Path, root: pathlib.Path) -> str:
  parts = list(path.relative_to(root.parent).with_suffix('').parts)
  if parts[-1] == '__init__':
    parts.pop()
  return '.'.join(parts)


def imports(tree: ast.Module, known: set[str]):
  """(imported module, at module level?) for every import in a file, resolved to known modules."""
  top_level = {id(node) for node in tree.body}
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      # `from pkg import mod` imports pkg.mod when it is a module, else a name of pkg
      names = [
        f'{node.module}.{a.name}' if f'{node.module}.{a.name}' in known else node.module
        for a in node.names
      ]
    else:
      continue
    for name in names:
      yield name, id(node) in top_level


def graph(root: pathlib.Path):
  files = {module_name(p, root): p for p in sorted(root.rglob('*.py'))}
  known = set(files)
  edges, problems = {}, []
  for mod, path in files.items():
    tree = ast.parse(path.read_text(), str(path))
    edges[mod] = set()
    for name, top in imports(tree, known):
      if name == 'configs' or name.startswith('configs.'):
        problems.append(f'{path}: imports {name} (library modules never import configs/)')
      cpu = name == f'{root.name}.cpu' or name.startswith(f'{root.name}.cpu.')
      if cpu and top and not mod.startswith(f'{root.name}.cpu'):
        problems.append(
          f'{path}: imports {name} at module level (import the CPU-only '
          'machinery inside the function that chooses it)'
        )
      while name and name not in known:  # `import a.b.c` of a name: its nearest module
        name = name.rpartition('.')[0]
      if name and name != mod and not mod.startswith(name + '.'):  # a package's own parents
        edges[mod].add(name)
  return edges, problems


def cycles(edges: dict) -> list[list[str]]:
  """The strongly connected components with more than one module (Tarjan's algorithm)."""
  index, low, stack, on_stack, found = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(edges.get(v, ())):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        found.append(sorted(component))

  sys.setrecursionlimit(10_000)
  for v in sorted(edges):
    if v not in index:
      visit(v)
  return found


def main(argv) -> int:
  root = pathlib.Path(argv[1] if len(argv) > 1 else pathlib.Path(__file__).parents[1] / 'mtspec')
  edges, problems = graph(root.resolve())
  for component in cycles(edges):
    problems.append('import cycle: ' + ' <-> '.join(component))
  for p in problems:
    print(f'check_imports: {p}', file=sys.stderr)
  return 1 if problems else 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
