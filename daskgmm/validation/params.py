"""Parameter constraints of daskgmm's estimators, checked the way scikit-learn checks them.

scikit-learn's own constraint classes live in a private module, so these are ours; a
failed check raises scikit-learn's ``InvalidParameterError`` with scikit-learn's message.
"""

from __future__ import annotations

import math
import numbers
import typing
import warnings

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning


def _invalid_parameter_error() -> type:
    """scikit-learn's ``InvalidParameterError`` (a ValueError and a TypeError).

    The class is defined in a private module of scikit-learn; its public face is what
    ``BaseEstimator``'s parameter validation raises, so it is taken from there.
    """

    class _Probe(BaseEstimator):
        _parameter_constraints: typing.ClassVar[dict] = {"p": [None]}

        def __init__(self, p=0):
            self.p = p

    try:
        _Probe()._validate_params()
    except (ValueError, TypeError) as exc:
        return type(exc)
    raise RuntimeError("scikit-learn accepted an invalid parameter")  # pragma: no cover


InvalidParameterError = _invalid_parameter_error()


def check_finite_starts(values, what: str, unit: str) -> None:
    """scikit-learn's ``check_array`` sentence for given starting points holding NaN or infinity ("Input
    contains NaN."), then how many and in which rows: ``KMeans(init=array)`` and ``KMedoids(init=array)``
    started from them silently (a NaN centre takes no row; a NaN point picks arbitrary medoids).

    Parameters
    ----------
    values : ndarray of float64, shape (k, d)
    what : str
        The parameter, for the message ("init").
    unit : str
        What a row of it is ("centre", "point").
    """
    bad = ~np.isfinite(values)
    if not bad.any():
        return
    kind = "NaN" if np.isnan(values).any() else "infinity or a value too large for dtype('float64')"
    rows = np.flatnonzero(bad.reshape(len(values), -1).any(axis=1)) if np.ndim(values) else np.zeros(1, int)
    raise ValueError(f"Input contains {kind}. {what} holds {int(bad.sum())} non-finite value(s), in {unit}(s) "
                     f"{', '.join(map(str, rows))}.")


def warn_convergence(message: str) -> None:
    """Warn with scikit-learn's ConvergenceWarning, pointing at the caller of ``fit``."""
    warnings.warn(message, ConvergenceWarning, stacklevel=3)


# ---------------------------------------------------------------------------
# Parameter constraints, described and checked the way scikit-learn does.


class Interval:
    """A real or integral number in an interval (``closed``: "left", "right", "both", "neither")."""

    def __init__(self, kind, left, right, closed="left"):
        self.kind, self.left, self.right, self.closed = kind, left, right, closed

    def ok(self, v) -> bool:
        if isinstance(v, (bool, np.bool_)):
            return False
        if self.kind is int and not isinstance(v, numbers.Integral):
            return False
        if self.kind is float and not isinstance(v, numbers.Real):
            return False
        if not isinstance(v, numbers.Integral) and math.isnan(v):  # np.float32('nan') too
            return False
        # a missing bound is infinite and, unless closed, excluded (scikit-learn's rule: reg_covar=inf is
        # not "in the range [0.0, inf)")
        left = -math.inf if self.left is None else self.left
        right = math.inf if self.right is None else self.right
        lo_ok = v >= left if self.closed in ("left", "both") else v > left
        hi_ok = v <= right if self.closed in ("right", "both") else v < right
        return lo_ok and hi_ok

    def __str__(self):
        lo = "-inf" if self.left is None else (float(self.left) if self.kind is float else self.left)
        hi = "inf" if self.right is None else (float(self.right) if self.kind is float else self.right)
        lb = "[" if self.closed in ("left", "both") and self.left is not None else "("
        rb = "]" if self.closed in ("right", "both") and self.right is not None else ")"
        return f"{'an int' if self.kind is int else 'a float'} in the range {lb}{lo}, {hi}{rb}"


class Options:
    """One of a set of strings."""

    def __init__(self, *values):
        self.values = set(values)

    def ok(self, v) -> bool:
        return isinstance(v, str) and v in self.values

    def __str__(self):
        return "a str among {" + ", ".join(repr(v) for v in sorted(self.values)) + "}"


class _Simple:
    def __init__(self, test, text):
        self.ok, self.text = test, text

    def __str__(self):
        return self.text


BOOLEAN = _Simple(lambda v: isinstance(v, (bool, np.bool_)), "an instance of 'bool' or an instance of 'numpy.bool'")
NONE = _Simple(lambda v: v is None, "None")
ARRAY_LIKE = _Simple(
    lambda v: not isinstance(v, str) and (hasattr(v, "__len__") or hasattr(v, "__array__")), "an array-like"
)
CALLABLE = _Simple(callable, "a callable")
RANDOM_STATE = [
    Interval(int, 0, 2**32 - 1, "both"),
    _Simple(lambda v: isinstance(v, np.random.RandomState), "an instance of 'numpy.random.mtrand.RandomState'"),
    NONE,
]
VERBOSE = [Interval(int, 0, None), BOOLEAN]


def _describe(constraints) -> str:
    parts = [str(c) for c in constraints]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


def validate_params(estimator) -> None:
    """Check every parameter against ``estimator._parameter_constraints`` (scikit-learn's message)."""
    for name, constraints in type(estimator)._parameter_constraints.items():
        value = getattr(estimator, name)
        if not any(c.ok(value) for c in constraints):
            raise InvalidParameterError(
                f"The {name!r} parameter of {type(estimator).__name__} must be "
                f"{_describe(constraints)}. Got {value!r} instead."
            )


def check_missing_supported(estimator, why: str) -> None:
    """Raise for ``missing="marginalize"`` on an estimator that cannot marginalise (``why``: the reason)."""
    if getattr(estimator, "missing", "raise") == "marginalize":
        name = type(estimator).__name__
        raise ValueError(
            f"{name} does not support missing='marginalize': {why}. Use a mixture (GaussianMixture, "
            "BayesianGaussianMixture or StudentTMixture) with missing='marginalize', or drop the rows with NaN "
            "(daskgmm.read_parquet(..., nan_policy='omit'))."
        )
