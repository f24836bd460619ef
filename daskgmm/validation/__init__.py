"""Checks before a fit: input rows of every supported kind (``checks``), parameter constraints
(``params``) and the checks of the first scan (``scan``: non-finite values, weights, degenerate data)."""
