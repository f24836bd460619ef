"""The lockstep loop of many models over one pass per iteration (``loop``) and the initialisations
(``init``: the scan's sample, k-means++ and Lloyd on it, polishing passes)."""
