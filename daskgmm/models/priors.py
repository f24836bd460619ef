"""The variational mixture's priors by name: one home for the estimator, ``select_model`` and the
command's options (which import this without SciPy, so that ``daskgmm --help`` stays fast)."""

#: ``weight_concentration_prior_type``'s values, as scikit-learn's.
PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")

#: The priors' values; the fitted ones are these names with a trailing underscore.
PRIORS = ("weight_concentration_prior", "mean_precision_prior", "mean_prior", "degrees_of_freedom_prior",
          "covariance_prior")

#: The constructor parameters of ``BayesianGaussianMixture`` that ``GaussianMixture`` lacks
#: (what ``select_model(..., bayesian_params=)`` accepts).
PRIOR_PARAMETERS = ("weight_concentration_prior_type", *PRIORS)
