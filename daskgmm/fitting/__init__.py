"""The fit procedures the estimators are thin over, one module per estimator family (``mixture``,
``variational``, ``kmeans``, ``kmedoids``, ``studentt``) and their shared parts: online (stepwise) EM
(``online``), predictions, scores and samples (``predict``), fitted attributes (``attributes``) and
the verbose lines (``report``)."""
