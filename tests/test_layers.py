"""The package's layers point down only, and no module imports itself through others.

Read from the source (every ``import``, including those inside functions), so an edge added
lazily to dodge an import cycle is caught as well.
"""

import ast
from pathlib import Path

import autogenome_sc

PACKAGE = Path(autogenome_sc.__file__).parent

#: Subpackage (or top-level module) -> layer. An import must go to a lower layer or stay
#: inside its own subpackage: nn, data <- train <- search <- tl <- pl.
LAYERS = {
    "_settings": 0,
    "_logging": 1,
    "_names": 1,
    "_docs": 1,
    "_checks": 1,
    "_precision": 1,
    "_traces": 1,
    "_versions": 1,  # ag.print_versions: reads package metadata and asks JAX for its devices  # compile counting, shared by data, train and search
    "_keys": 2,
    "config": 2,
    "nn": 3,
    "data": 3,
    "datasets": 3,
    "train": 4,
    "explain": 4,
    "pp": 4,
    "io": 5,  # the model directory format: writes and reads files, knows no Model
    "model": 6,  # ag.Model: a task, a network and its inference
    "search": 6,
    "tl": 7,
    "get": 7,
    "pl": 8,
    "": 9,  # autogenome_sc/__init__.py: the public face imports everything
    "cli": 10,  # the command line drives the public face
}


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(source: str, mod: str, is_init: bool) -> set[str]:
    """The autogenome_sc modules a file imports (``from .. import x`` counts as module ``x``)."""
    package = mod if is_init else mod.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "autogenome_sc":
                continue
            if node.module is None:  # from .. import _logging: the module _logging
                found |= {f"{target}.{a.name}" for a in node.names}
            else:
                found.add(target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "autogenome_sc"}
    return found


def _graph() -> dict[str, set[str]]:
    return {_module(p): _imports(p.read_text(), _module(p), p.name == "__init__.py") for p in PACKAGE.rglob("*.py")}


def _layer(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else ""


def _upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{a} -> {b}"
        for a, targets in graph.items()
        for b in targets
        if _layer(a) != _layer(b) and LAYERS[_layer(b)] >= LAYERS[_layer(a)]
    )


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    """Import cycles; a package counts as its ``__init__`` module."""
    state: dict[str, int] = {}
    found = []

    def visit(m, stack):
        state[m] = 1
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                found.append(" -> ".join([*stack[stack.index(t) :], t]))
            elif t not in state:
                visit(t, [*stack, t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return found


def test_every_part_of_the_package_has_a_layer():
    assert {_layer(m) for m in _graph()} == set(LAYERS)


def test_imports_point_down_only():
    upward = _upward(_graph())
    assert not upward, "imports that point up or sideways:\n" + "\n".join(upward)


def test_no_import_cycle():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checks_catch_a_lazy_upward_import_and_a_cycle():
    lazy = "def f():\n    from ..tl._vae import train_vae\n"
    found = _imports(lazy, "autogenome_sc.search._fake", is_init=False)
    assert found == {"autogenome_sc.tl._vae"}
    assert _upward({"autogenome_sc.search._fake": found}) == ["autogenome_sc.search._fake -> autogenome_sc.tl._vae"]
    assert _imports("from . import _x\n", "autogenome_sc.tl", is_init=True) == {"autogenome_sc.tl._x"}
    ring = {"autogenome_sc.tl._a": {"autogenome_sc.tl._b"}, "autogenome_sc.tl._b": {"autogenome_sc.tl._a"}}
    assert _cycles(ring) == ["autogenome_sc.tl._a -> autogenome_sc.tl._b -> autogenome_sc.tl._a"]
