"""
The package's shape: layers import only downward, no import cycles, no
module above 600 lines.

Every module of ``dynomite/`` is parsed (nothing is imported) and every
import in it is read, at top level and inside functions alike; imports
under ``if TYPE_CHECKING:`` are left out, since they never run.  The layer
order is `LAYERS`, and each subpackage's ``__init__`` docstring says the
same in words.

A failure lists every violation as ("upward", importer, imported),
("cycle", module, ...) with the modules of one cycle sorted, or ("lines",
module).
"""

from __future__ import annotations

import ast
import os
from typing import Dict, Iterator, List, Optional, Set, Tuple

from twisted.trial.unittest import SynchronousTestCase

import dynomite

PACKAGE_DIR = os.path.dirname(os.path.abspath(dynomite.__file__))

#: Layers, low to high. A module may import modules of its own subpackage
#: and of lower layers; between different subpackages of one layer, see
#: `SIDEWAYS`. "dynomite" is the package root (``__version__``).
LAYERS: Tuple[Tuple[str, ...], ...] = (
    ("dynomite",),
    ("wire", "config", "stats", "runtime"),
    ("commands", "placement", "consistency"),
    ("datastore", "peers", "replication"),
    ("repair", "scaleout"),
    ("node",),
    ("ops",),             # fed a status view by service, which builds the admin site from it
    ("service", "tap"),
    ("cli", "launcher", "bench"),
)

#: Imports between different subpackages of the same layer. In the two
#: middle layers only these, "downward in the list": placement may use
#: commands, consistency both; replication may use datastore and peers,
#: which use neither each other nor replication. In the other layers
#: (None) the subpackages may import each other.
SIDEWAYS: Dict[str, Optional[Set[str]]] = {
    "dynomite": None,
    "wire": None, "config": None, "stats": None, "runtime": None,
    "commands": set(), "placement": {"commands"}, "consistency": {"commands", "placement"},
    "datastore": set(), "peers": set(), "replication": {"datastore", "peers"},
    "repair": None, "scaleout": None, "node": None, "ops": None,
    "service": None, "tap": None,
    "cli": None, "launcher": None, "bench": None,
}

MAX_LINES = 600



def _modules() -> Dict[str, str]:
    """Dotted module name -> path, for every module of the package."""
    found = {}
    root = os.path.dirname(PACKAGE_DIR)
    for directory, _, files in os.walk(PACKAGE_DIR):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(directory, name)
            dotted = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
            if dotted.endswith(".__init__"):
                dotted = dotted[:-len(".__init__")]
            found[dotted] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"
            or isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every import statement, at any depth, except under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        children = list(ast.iter_child_nodes(node))
        if isinstance(node, ast.If) and _is_type_checking(node):
            children = node.orelse
        stack.extend(children)


def _imports(module: str, path: str, modules: Dict[str, str]) -> Set[str]:
    """The package's modules that ``module`` imports."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    is_package = path.endswith("__init__.py")
    found = set()
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                parent = parts[:len(parts) - node.level + (1 if is_package else 0)]
                base = ".".join(parent + ([base] if base else []))
            # "from a import b": the module a.b if there is one, else a itself
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]   # "import a.b.c" of an attribute path
            if target and target != module:
                found.add(target)
    return found


def _subpackage(module: str) -> str:
    """The layer table's name for ``module``: "dynomite", "wire", "stats", "service", ..."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _rank(subpackage: str) -> int:
    for rank, layer in enumerate(LAYERS):
        if subpackage in layer:
            return rank
    raise AssertionError(f"{subpackage!r} is in no layer: add it to LAYERS and SIDEWAYS")


def _allowed(importer: str, imported: str) -> bool:
    a, b = _subpackage(importer), _subpackage(imported)
    if a == b:
        return True
    rank_a, rank_b = _rank(a), _rank(b)
    if rank_b != rank_a:
        return rank_b < rank_a
    sideways = SIDEWAYS[a]
    return sideways is None or b in sideways


def _cycles(graph: Dict[str, Set[str]]) -> List[Tuple[str, ...]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    on_stack: Set[str] = set()
    stack: List[str] = []
    found: List[Tuple[str, ...]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                found.append(tuple(sorted(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def violations() -> Set[Tuple[str, ...]]:
    """Every upward import, import cycle and overlong module of the package today."""
    modules = _modules()
    graph = {m: _imports(m, path, modules) for m, path in modules.items()}
    found: Set[Tuple[str, ...]] = set()
    for importer, imported in graph.items():
        for target in imported:
            if not _allowed(importer, target):
                found.add(("upward", importer, target))
    for cycle in _cycles(graph):
        found.add(("cycle",) + cycle)
    for module, path in modules.items():
        with open(path, encoding="utf-8") as f:
            if len(f.read().splitlines()) > MAX_LINES:
                found.add(("lines", module))
    return found


class LayerTests(SynchronousTestCase):
    def test_every_subpackage_has_a_layer(self):
        subpackages = {_subpackage(m) for m in _modules()}
        for name in subpackages:
            _rank(name)
            self.assertIn(name, SIDEWAYS)
        self.assertEqual(set(SIDEWAYS), {name for layer in LAYERS for name in layer})

    def test_no_violations(self):
        self.assertEqual(sorted(violations()), [], "upward imports, import cycles or modules "
                                                   f"above {MAX_LINES} lines")


class CheckerTests(SynchronousTestCase):
    """The checker itself sees what it must."""

    def test_upward_and_sideways(self):
        self.assertTrue(_allowed("dynomite.node.client", "dynomite.wire.resp"))
        self.assertTrue(_allowed("dynomite.node.client", "dynomite.node.session"))
        self.assertFalse(_allowed("dynomite.wire.resp", "dynomite.node.client"))
        self.assertTrue(_allowed("dynomite.replication.outbox", "dynomite.peers.link"))
        self.assertFalse(_allowed("dynomite.peers.link", "dynomite.datastore.pool"))
        self.assertFalse(_allowed("dynomite.datastore.pool", "dynomite.peers.link"))
        self.assertFalse(_allowed("dynomite.commands.table", "dynomite.placement.router"))
        self.assertTrue(_allowed("dynomite.ops.admin", "dynomite.node.client"))
        self.assertFalse(_allowed("dynomite.ops.admin", "dynomite.service"))
        self.assertTrue(_allowed("dynomite.service", "dynomite.ops.admin"))
        self.assertTrue(_allowed("dynomite.tap", "dynomite.service"))

    def test_cycles(self):
        graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
        self.assertEqual(_cycles(graph), [("a", "b", "c")])

    def test_imports_inside_functions_count_and_type_checking_ones_do_not(self):
        self.assertIn("dynomite.runtime.batching", _imports(
            "dynomite.tap", os.path.join(PACKAGE_DIR, "tap.py"), _modules()))
        keys = os.path.join(PACKAGE_DIR, "commands", "keys.py")
        self.assertNotIn("dynomite.commands.table",
                         _imports("dynomite.commands.keys", keys, _modules()))

    def test_relative_imports(self):
        path = os.path.join(PACKAGE_DIR, "bench", "targets.py")
        self.assertIn("dynomite.bench.interpreters",
                      _imports("dynomite.bench.targets", path, _modules()))


class PackagingTests(SynchronousTestCase):
    def test_setup_cfg_ships_every_subpackage(self) -> None:
        """A subpackage missing from setup.cfg works from a checkout and is missing from an install."""
        import configparser
        parser = configparser.ConfigParser()
        parser.read(os.path.join(os.path.dirname(PACKAGE_DIR), "setup.cfg"))
        listed = set(parser["options"]["packages"].split())
        found = {"dynomite"} | {
            "dynomite." + os.path.relpath(root, PACKAGE_DIR).replace(os.sep, ".")
            for root, dirs, files in os.walk(PACKAGE_DIR)
            if "__init__.py" in files and root != PACKAGE_DIR}
        self.assertEqual(sorted(found - listed), [], "subpackages setup.cfg does not ship")
