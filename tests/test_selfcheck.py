"""The compiled core's known-answer check (daskgmm.kernels.selfcheck) and what the choice does with it.

A build that gives wrong answers is simulated by a wrapper around a real variant's module that
nudges one statistic after the core has computed it.
"""

import os
import signal
import threading
import time
import warnings

import numpy as np
import pytest

from daskgmm.kernels import compiled, selfcheck


def _runnable():
    """The variants this CPU runs, in the order ``auto`` tries them (:func:`compiled.preferred`)."""
    config = compiled.config()
    names = compiled.preferred(config["variants_built"], config["cpu_features"])
    return [n for n in names if compiled.load_variant(n) is not None]


class Wrong:
    """A variant's module whose ``mixture_block`` (or ``mixture_logits``) is off by ``by`` (relative)."""

    def __init__(self, module, by=1e-6, where="moments"):
        self._module, self._by, self._where = module, by, where

    def __getattr__(self, name):
        return getattr(self._module, name)

    def mixture_block(self, *args, **kwargs):
        out = self._module.mixture_block(*args, **kwargs)
        x, level, modes, S = args[0], args[4], args[6], args[7]
        kmeans = level == 0 and list(modes) == [compiled.HARD]  # the core's k-means path
        if (self._where == "moments" or (self._where == "kmeans" and kmeans)
                or (self._where == "columns" and not x.flags.c_contiguous)):
            S[-1, -1] += self._by * max(np.abs(S).max(), 1.0)
        return out

    def studentt_block(self, *args, **kwargs):
        out = self._module.studentt_block(*args, **kwargs)
        log_u = args[11]
        if self._where == "student":
            log_u[0] += self._by * max(np.abs(log_u).max(), 1.0)
        return out

    def mixture_logits(self, x, centre, theta, level, out):
        self._module.mixture_logits(x, centre, theta, level, out)
        if self._where == "logits":
            out[0, 0] += self._by * max(np.abs(out).max(), 1.0)


def _best_variant_wrong(fresh):
    """Make the best variant this CPU runs give wrong answers (skip without a second one); its names."""
    names = _runnable()
    if len(names) < 2:
        pytest.skip("needs two variants this CPU runs")
    real = compiled._import
    fresh.setattr(compiled, "_import", lambda n: Wrong(real(n)) if n == names[0] else real(n))
    compiled.reset()
    return names


@pytest.fixture
def fresh(monkeypatch):
    """The choice made again under the test's environment, and forgotten after it."""
    monkeypatch.delenv("DASKGMM_KERNEL", raising=False)
    compiled.reset()
    yield monkeypatch
    monkeypatch.undo()
    compiled.reset()


@pytest.mark.parametrize("name", compiled.variant_names())
def test_every_variant_built_here_passes(name):
    module = compiled.load_variant(name)
    if module is None:
        pytest.skip(f"variant {name}: not built here or this CPU cannot run it")
    assert selfcheck.known_answer(module) is None


@pytest.mark.parametrize("where", ["moments", "logits", "student", "kmeans", "columns"])
def test_a_wrong_build_is_caught_and_named(where):
    """Wrong statistics of any pass, of the k-means path alone, or of blocks read by columns only."""
    name = _runnable()[0] if _runnable() else pytest.skip("no compiled variant runs here")
    why = selfcheck.known_answer(Wrong(compiled.load_variant(name), where=where))
    assert why is not None
    assert {"moments": "of model 5 (spherical, hard) over float64 rows differs", "logits": "logits",
            "student": "log_u of model 0 (full, Student-t)",
            "kmeans": "n of model 0 (spherical, hard) over float64 rows differs",
            "columns": "of model 5 (spherical, hard) over float64 rows, columns contiguous differs"}[where] in why
    assert "differs from NumPy's" in why or "differ from NumPy's" in why
    # a NaN where NumPy gives a number is a wrong answer too (the difference itself skips NaN)
    assert selfcheck.known_answer(Wrong(compiled.load_variant(name), by=np.nan, where=where)) is not None
    # rounding is not a failure
    assert selfcheck.known_answer(Wrong(compiled.load_variant(name), by=1e-13, where=where)) is None


def test_auto_passes_over_a_wrong_variant_with_a_warning(fresh):
    names = _best_variant_wrong(fresh)
    with pytest.warns(compiled.KernelCheckWarning, match=f"the {names[0]} variant fails its known-answer check"):
        assert compiled.ready() is not None
    assert compiled.kernel_name() == f"compiled-{names[1]}"
    assert names[0] in compiled.describe() and "known-answer" in compiled.describe()
    assert compiled.config()["known_answer"].startswith(f"the {names[0]} variant fails")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compiled.ready()  # decided once per process: no second warning


def test_numpy_when_every_variant_is_wrong(fresh):
    if not _runnable():
        pytest.skip("no compiled variant runs here")
    real = compiled._import
    fresh.setattr(compiled, "_import", lambda n: Wrong(real(n)))
    compiled.reset()
    with pytest.warns(compiled.KernelCheckWarning, match="Passes use numpy"):
        assert compiled.ready() is None
    assert compiled.kernel_name() == "numpy"
    assert "known-answer check" in compiled.error()


def test_a_forced_wrong_variant_is_an_error(fresh):
    names = _runnable()
    if not names:
        pytest.skip("no compiled variant runs here")
    real = compiled._import
    fresh.setattr(compiled, "_import", lambda n: Wrong(real(n)))
    fresh.setenv("DASKGMM_KERNEL", names[-1])
    compiled.reset()
    with pytest.raises(compiled.KernelChoiceError, match=f"DASKGMM_KERNEL={names[-1]}: .*known-answer check"):
        compiled.ready()


class Stale(Wrong):
    """A module built from older sources than the Python code: it lacks an entry point."""

    def __getattribute__(self, name):
        if name == "studentt_block":
            raise AttributeError(f"module has no attribute {name!r}")
        return super().__getattribute__(name)

    def __getattr__(self, name):
        if name == "studentt_block":
            raise AttributeError(f"module has no attribute {name!r}")
        return super().__getattr__(name)


def test_a_module_older_than_the_code_is_not_used(fresh):
    """An editable install whose core was not rebuilt: the check raises inside, the choice goes on."""
    names = _runnable()
    if not names:
        pytest.skip("no compiled variant runs here")
    real = compiled._import
    fresh.setattr(compiled, "_import", lambda n: Stale(real(n), by=0.0))
    compiled.reset()
    with pytest.warns(compiled.KernelCheckWarning, match="the check raised AttributeError: .*studentt_block"):
        assert compiled.ready() is None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_during_the_check_does_not_hang(fresh):
    """A process forked while another thread runs the check (and holds the choice's lock) chooses
    again in the child: the lock it inherited is held by a thread the child does not have."""
    if not _runnable():
        pytest.skip("needs a variant of the compiled core this CPU runs (none is checked without one)")
    parent = os.getpid()
    started, release = threading.Event(), threading.Event()
    real = compiled._known_answer[0]

    def slow(module):
        if os.getpid() == parent:
            started.set()
            release.wait(20)
        return real(module)

    fresh.setattr(compiled, "_known_answer", [slow])
    fresh.setattr(compiled, "_verdicts", {})  # checked again: verdicts outlive reset()
    compiled.reset()
    t = threading.Thread(target=compiled.ready, daemon=True)
    t.start()
    try:
        assert started.wait(20)
        pid = os.fork()
        if pid == 0:  # the child: choose, and say what it chose by the exit status
            try:
                compiled.ready()
                os._exit(0 if compiled.kernel_name() != "" else 3)
            except BaseException:
                os._exit(4)
    finally:
        release.set()
        t.join(20)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung on the choice's lock")
    assert os.waitstatus_to_exitcode(status) == 0


def test_the_warning_as_an_error_leaves_show_config_working(fresh):
    """Under a filter that makes warnings errors (-W error), the first use raises the check's warning;
    show-config, which the warning asks for, still prints the verdict, and the choice is made."""
    names = _best_variant_wrong(fresh)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(compiled.KernelCheckWarning):
            compiled.ready()
        cfg = compiled.config()
        assert cfg["kernel"] == f"compiled-{names[1]}"
        assert cfg["known_answer"].startswith(f"the {names[0]} variant fails")
        assert compiled.ready() is not None
