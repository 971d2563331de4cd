"""The import direction of the package: utils at the bottom, models (and the demo datasets)
above it, analysis above models, engine / deploy / runtime on top of the package (none of
them imports another), and no import circle. Every import counts, also one inside a
function."""
import ast
import os
import os.path as osp

import pytest

from .conftest import ROOT

#: the rank of each sub-package: a module may import its own sub-package and lower ranks
RANKS = {
    'version': 0,
    'utils': 0,
    'models': 1,
    'datasets': 1,
    'analysis': 2,
    'engine': 3,
    'deploy': 3,
    'runtime': 3
}


def _module_name(root: str, path: str) -> str:
    rel = osp.relpath(path, root)[:-len('.py')].replace(os.sep, '.')
    return rel[:-len('.__init__')] if rel.endswith('.__init__') else rel


def _imports(root: str, path: str):
    """``(line, imported module)`` of every mmadn import in the file, resolved to absolute
    names (``from .x import y`` -> ``mmadn.pkg.x.y`` where ``y`` is a module, else
    ``mmadn.pkg.x``)."""
    name = _module_name(root, path)
    package = name if path.endswith('__init__.py') else name.rpartition('.')[0]
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split('.')[0] == 'mmadn':
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split('.')
                base = '.'.join(parts[:len(parts) - node.level + 1])
                target = f'{base}.{node.module}' if node.module else base
            else:
                target = node.module or ''
            if target.split('.')[0] != 'mmadn':
                continue
            for alias in node.names:
                sub = osp.join(root, *f'{target}.{alias.name}'.split('.'))
                is_module = osp.isfile(sub + '.py') or osp.isdir(sub)
                yield node.lineno, f'{target}.{alias.name}' if is_module else target


def import_graph(root: str = ROOT) -> dict:
    """``module -> (path, [(line, imported module), ...])`` of ``root/mmadn``."""
    graph = {}
    for folder, _, files in os.walk(osp.join(root, 'mmadn')):
        for file in files:
            if file.endswith('.py'):
                path = osp.join(folder, file)
                graph[_module_name(root, path)] = (path, sorted(set(_imports(root, path))))
    return graph


def _subpackage(module: str):
    parts = module.split('.')
    return parts[1] if len(parts) > 1 else None


def wrong_imports(root: str = ROOT) -> list:
    wrong = []
    for module, (path, imports) in import_graph(root).items():
        own = _subpackage(module)
        if own is None:  # mmadn/__init__.py imports everything to register it
            continue
        for line, target in imports:
            other = _subpackage(target)
            if other is not None and other != own and not RANKS[other] < RANKS[own]:
                wrong.append(f'{osp.relpath(path, root)}:{line} ({own}) imports {target} '
                             f'({other})')
    return wrong


def import_circles(root: str = ROOT) -> list:
    graph = import_graph(root)
    edges = {m: {t for _, t in imports if t in graph} for m, (_, imports) in graph.items()}
    visiting, done, circles = [], set(), []

    def visit(node):
        if node in done:
            return
        if node in visiting:
            circles.append(visiting[visiting.index(node):] + [node])
            return
        visiting.append(node)
        for nxt in sorted(edges[node]):
            visit(nxt)
        visiting.pop()
        done.add(node)

    for node in sorted(edges):
        visit(node)
    return circles


def test_imports_point_down():
    assert len(import_graph()) > 30  # the walk found the package
    wrong = wrong_imports()
    assert not wrong, 'imports against the layering:\n' + '\n'.join(wrong)


def test_no_import_circle():
    circles = import_circles()
    assert not circles, 'import circles:\n' + '\n'.join(' -> '.join(c) for c in circles)


def _write(root, rel, text):
    path = osp.join(root, rel)
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)


@pytest.mark.parametrize('module, line, expect', [
    ('mmadn/utils/io.py', 'from ..models.layers import parse_skip',
     'mmadn/utils/io.py:2 (utils) imports mmadn.models.layers (models)'),
    ('mmadn/models/layers/x.py', 'def f():\n    from ...engine import launch',
     'mmadn/models/layers/x.py:3 (models) imports mmadn.engine.launch (engine)'),
    ('mmadn/deploy/x.py', 'import mmadn.runtime.policy',
     'mmadn/deploy/x.py:2 (deploy) imports mmadn.runtime.policy (runtime)'),
])
def test_the_checks_catch_a_wrong_import_and_a_circle(tmp_path, module, line, expect):
    root = str(tmp_path)
    for pkg in ('mmadn', 'mmadn/utils', 'mmadn/models', 'mmadn/models/layers', 'mmadn/engine',
                'mmadn/deploy', 'mmadn/runtime'):
        _write(root, f'{pkg}/__init__.py', '')
    _write(root, 'mmadn/engine/launch.py', 'from ..models import layers\n')
    _write(root, 'mmadn/runtime/policy.py', '')
    assert wrong_imports(root) == [] and import_circles(root) == []
    _write(root, module, '"""doc"""\n' + line + '\n')
    assert wrong_imports(root) == [expect]
    _write(root, 'mmadn/models/layers/a.py', 'from . import b\n')
    _write(root, 'mmadn/models/layers/b.py', 'from .a import f\n')
    assert ['mmadn.models.layers.a', 'mmadn.models.layers.b', 'mmadn.models.layers.a'] in \
        import_circles(root)
