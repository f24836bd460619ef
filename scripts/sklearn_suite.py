"""Run scikit-learn's own public-API tests of an estimator against daskgmm's.

Copies a test module from the installed scikit-learn (``sklearn/mixture/tests/
test_gaussian_mixture.py``, ``test_bayesian_mixture.py``, ``sklearn/cluster/tests/
test_k_means.py``), points the import of the estimator under test at daskgmm, and
runs the tests that use only public API: a test is left out when it calls a name
imported from a private scikit-learn module (other than the test helpers in
``sklearn.utils._testing`` and the data generators), reads a private attribute
(``est._something``), or exercises the array API. Sparse input is run like dense
(KMeans takes scipy.sparse rows; the mixtures' modules have no sparse tests).

    python scripts/sklearn_suite.py gaussian_mixture [pytest args...]
    python scripts/sklearn_suite.py k_means -q

Prints the tests left out and why, then pytest's summary; exits with pytest's status.
"""

from __future__ import annotations

import ast
import os
import pathlib
import re
import subprocess
import sys
import tempfile

import sklearn

SUITES = {
    "gaussian_mixture": ("mixture/tests/test_gaussian_mixture.py", "from sklearn.mixture import GaussianMixture",
                         "from daskgmm import GaussianMixture"),
    "bayesian_mixture": ("mixture/tests/test_bayesian_mixture.py",
                         "from sklearn.mixture import BayesianGaussianMixture",
                         "from daskgmm import BayesianGaussianMixture"),
    "k_means": ("cluster/tests/test_k_means.py", None, None),
}
# private modules whose names are test helpers, not the API under test
HELPER_MODULES = ("sklearn.utils._testing", "sklearn.datasets._samples_generator", "sklearn.utils.fixes")


def _private_names(tree) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sklearn"):
            private = any(part.startswith("_") for part in node.module.split("."))
            if private and not node.module.startswith(HELPER_MODULES):
                names.update(a.asname or a.name for a in node.names)
    return names


def _reason(func: ast.FunctionDef, private: set[str], source: str) -> str | None:
    text = ast.get_source_segment(source, func) or ""
    for node in ast.walk(func):
        if isinstance(node, ast.Name) and node.id in private:
            return f"calls private {node.id}"
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and node.attr not in ("_testing",)):
            return f"reads private attribute .{node.attr}"
    if "array_api" in text or "array_namespace" in text:
        return "array API"
    return None


def _parametrize_private(func: ast.FunctionDef, private: set[str]) -> str | None:
    for dec in func.decorator_list:
        for node in ast.walk(dec):
            if isinstance(node, ast.Name) and node.id in private:
                return f"parametrized with private {node.id}"
    return None


def prepare(suite: str, directory: pathlib.Path) -> tuple[pathlib.Path, dict]:
    rel, old, new = SUITES[suite]
    source = (pathlib.Path(sklearn.__file__).parent / rel).read_text()
    if suite == "k_means":
        # the module imports KMeans with other estimators from sklearn.cluster; rebind it after the imports
        source = re.sub(r"^(from sklearn\.cluster import \([^)]*\))", r"\1\nfrom daskgmm import KMeans",
                        source, count=1, flags=re.M | re.S)
        if "from daskgmm import KMeans" not in source:
            source = re.sub(r"^(from sklearn\.cluster import [^\n]*)$", r"\1\nfrom daskgmm import KMeans",
                            source, count=1, flags=re.M)
    else:
        if old not in source:
            raise SystemExit(f"{rel}: import line {old!r} not found")
        source = source.replace(old, new)
    tree = ast.parse(source)
    private = _private_names(tree)
    left_out = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            why = _parametrize_private(node, private) or _reason(node, private, source)
            if why:
                left_out[node.name] = why
    path = directory / pathlib.Path(rel).name
    path.write_text(source)
    return path, left_out


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in SUITES:
        print(__doc__)
        return 2
    suite, extra = argv[0], argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        path, left_out = prepare(suite, pathlib.Path(tmp))
        print(f"scikit-learn {sklearn.__version__}: {path.name}; left out ({len(left_out)}):")
        for name, why in sorted(left_out.items()):
            print(f"  {name}: {why}")
        # deselect by exact function name (-k matches substrings: test_score would drop test_score_samples)
        (pathlib.Path(tmp) / "conftest.py").write_text(
            "from sklearn.conftest import global_dtype, pytest_generate_tests  # noqa: F401\n"
            f"LEFT_OUT = {sorted(left_out)!r}\n"
            "def pytest_collection_modifyitems(config, items):\n"
            "    def out(i):\n"
            "        return i.originalname in LEFT_OUT\n"
            "    drop = [i for i in items if out(i)]\n"
            "    items[:] = [i for i in items if not out(i)]\n"
            "    config.hook.pytest_deselected(items=drop)\n"
        )
        cmd = [sys.executable, "-m", "pytest", str(path), "-p", "no:cacheprovider",
               "-W", "ignore::DeprecationWarning", "--rootdir", tmp, "-o", "addopts=", *extra]
        env = {**os.environ, "SKLEARN_RUN_FLOAT32_TESTS": "1"}  # global_dtype: float32 and float64
        return subprocess.call(cmd, cwd=tmp, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
