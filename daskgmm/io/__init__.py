"""Data in and out: Parquet sources (``parquet``: ``open_parquet``/``read_parquet``; ``files``: listing,
footers, schema checks, row slices sized from memory; ``read``: the read tasks; ``sparse``: the sparse
layout), atomic outputs (``outputs`` on file systems, ``store`` on object stores) and model files and
checkpoints (``modelfiles``). A new input format is a new module here."""
