"""Each model kind's side of the loop, on the client: what it asks of a pass, its update from the
merged statistics, its objective and convergence (``states``: Gaussian mixtures, k-means, k-medoids,
and the choice among runs; ``variational``: the variational posterior; ``studentt``: the Student-t
mixture)."""
