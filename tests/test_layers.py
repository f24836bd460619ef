"""The package's layers: every import (lazy ones inside functions too) points down or sideways.

The table is the one in docs/architecture.md; change both together.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "daskgmm"

# The layers, lowest first: a module may import from its own layer or any layer below. Each
# subpackage of daskgmm is one layer; the modules at the top of the package are the estimators,
# except the version string (lowest) and the pictures (a front end).
PACKAGES = ["kernels", "engine", "models", "em", "validation", "fitting", "io"]
LAYERS = [
    *[(name, [f"daskgmm.{name}"] + (["daskgmm.version"] if name == "kernels" else [])) for name in PACKAGES],
    ("estimators", sorted(f"daskgmm.{p.stem}" for p in PACKAGE.glob("*.py")
                          if p.stem not in ("__init__", "__main__", "version", "plot"))),
    ("front ends", ["daskgmm.cli", "daskgmm.plot", "daskgmm.__main__", "daskgmm"]),
]


def test_the_folders_are_the_layers():
    """Every subpackage is a layer (a new folder is placed in the table, not guessed)."""
    folders = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
    assert folders == sorted([*PACKAGES, "cli"])


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _layer(module: str) -> int:
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    if best is None:
        raise AssertionError(f"{module} is in no layer of tests/test_layers.py (add it, and to docs/architecture.md)")
    return best


def _imports(path: pathlib.Path):
    """(line, imported module, names) of every import of a daskgmm or scikit-learn module."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name, []
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [a.name for a in node.names]
            if node.module == "daskgmm":  # `from daskgmm import covariance` names submodules
                sub = [n for n in names if (PACKAGE / f"{n}.py").exists() or (PACKAGE / n).is_dir()]
                for n in sub:
                    yield node.lineno, f"daskgmm.{n}", []
                names = [n for n in names if n not in sub]
                if not names:
                    continue
            yield node.lineno, node.module, names


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_imports_point_down_the_layers(path):
    me = _module_name(path)
    mine = _layer(me)
    for line, module, _names in _imports(path):
        if not (module == "daskgmm" or module.startswith("daskgmm.")):
            continue
        theirs = _layer(module)
        assert theirs <= mine, (
            f"{me} (layer {LAYERS[mine][0]!r}) imports {module} (layer {LAYERS[theirs][0]!r}) at line {line}"
        )


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_no_private_names_across_modules(path):
    me = _module_name(path)
    for line, module, names in _imports(path):
        if module.startswith("sklearn"):
            assert not any(part.startswith("_") for part in module.split(".")), (
                f"{me} imports scikit-learn's private module {module} (line {line})"
            )
        if module.startswith(("daskgmm", "sklearn")):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            assert not private, f"{me} imports private {private} from {module} (line {line})"


def test_worker_side_modules_do_not_import_scikit_learn():
    """Workers import these to run tasks; scikit-learn would cost each ~64 MiB (of a 300 MiB limit),
    pandas ~40 MiB. (What a real worker imports running a whole job: tests/test_reliability.py.) Nor
    SciPy, sizing dense chunks: the size of sparse ones (engine.sizes) is registered lazily."""
    import subprocess
    import sys

    code = (
        "import sys, daskgmm.em.loop, daskgmm.engine.passes, daskgmm.io.parquet, daskgmm.kernels, "
        "daskgmm.models.states, daskgmm.kernels.predict, daskgmm.engine.sizes, "
        "daskgmm.kernels.studentt, daskgmm.em.init, daskgmm.engine.cluster, daskgmm.io.read, daskgmm.io.outputs; "
        "import numpy; from dask.sizeof import sizeof; sizeof([numpy.zeros((4, 3)), (numpy.arange(3), 'a')]); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy', 'pandas')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def _module_graph() -> dict:
    """Module -> the daskgmm modules it imports (``from pkg import sub`` names the submodule)."""
    names = {_module_name(p): p for p in MODULES}
    graph = {m: set() for m in names}
    for me, path in names.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                graph[me].update(a.name for a in node.names if a.name in names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in names:
                subs = {f"{node.module}.{a.name}" for a in node.names} & names.keys()
                graph[me].update(subs)
                if len(subs) < len(node.names):  # a name defined in the module itself
                    graph[me].add(node.module)
    return graph


def test_no_import_cycle():
    graph = _module_graph()
    done, path = set(), []

    def visit(m):
        if m in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(m):] + [m]))
        if m in done:
            return
        path.append(m)
        for n in sorted(graph[m]):
            visit(n)
        path.pop()
        done.add(m)

    for m in sorted(graph):
        visit(m)


@pytest.mark.parametrize("path", sorted([*(PACKAGE / "cli").rglob("*.py"), *(PACKAGE / "fitting").rglob("*.py")]),
                         ids=lambda p: _module_name(p))
def test_front_ends_and_fitting_call_no_private_method_of_another_object(path):
    """The command and the fitting procedures call an estimator's public methods and attributes, or a
    function of the fitting layer (the CLI called ``KMeans._n_init()``): ``x._name(...)`` is a call of
    another object's private method unless ``x`` is ``self`` or ``cls``."""
    import ast

    me = _module_name(path)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name, owner = node.func.attr, node.func.value
            if not name.startswith("_") or name.startswith("__"):
                continue
            assert isinstance(owner, ast.Name) and owner.id in ("self", "cls"), (
                f"{me} calls the private {ast.unparse(node.func)}() at line {node.lineno}")
