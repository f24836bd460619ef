"""A stop that a signal asked for, kept until a safe point raises it.

A signal handler that raises (as Python's own SIGINT handler does) loses its
exception when the signal lands in code whose exceptions Python ignores: a
garbage-collector callback (distributed installs one, ``GCDiagnosis``), a
``__del__`` or a weakref callback. Python prints "Exception ignored in ..." and
the job runs on to the end. So the command's handler also records the stop
here, and the places where a job must not go on past a stop raise it again:
every progress line and the moment before an output is swapped into place.
"""

from __future__ import annotations

import contextlib

_pending: type[BaseException] | None = None
_deferring = 0


def request(exc_type: type[BaseException]) -> None:
    """Record that the job must stop with ``exc_type`` (called from a signal handler)."""
    global _pending
    _pending = exc_type


def clear() -> None:
    global _pending
    _pending = None


def check() -> None:
    """Raise the stop a signal asked for, if any (it stays recorded: every later check raises it too)."""
    if _pending is not None:
        raise _pending()


def requested() -> bool:
    """Whether a signal asked the job to stop."""
    return _pending is not None


def pending() -> type[BaseException] | None:
    """The exception type of the stop a signal asked for, or None."""
    return _pending


@contextlib.contextmanager
def deferred():
    """A block a signal's exception must not cut in two: a signal arriving inside only records its
    stop (the command's handler asks :func:`deferring`), and the caller raises it with :func:`check`
    once it can clean up (e.g. after LocalCluster's start: cut short, its half-started workers were
    left to distributed's exit hook, which fails on them with a traceback)."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1


def deferring() -> bool:
    """Whether a signal's exception is to wait for the end of a :func:`deferred` block."""
    return _deferring > 0
