"""The input layer's source protocol: a format is an opener in io.source.OPENERS."""

import pytest


def test_the_command_reads_through_the_source_protocol(tmp_path):
    import pandas as pd

    from daskgmm.io.parquet import ParquetSource
    from daskgmm.io.source import OPENERS, Source, open_source

    pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0.5, 0.25, 0.0]}).to_parquet(tmp_path / "x.parquet")
    src = open_source(str(tmp_path / "x.parquet"), ["a", "b"])
    assert isinstance(src, ParquetSource) and isinstance(src, Source) and src.n_rows == 3
    assert set(OPENERS) == {"parquet", "sparse"}
    with pytest.raises(ValueError, match=r"format must be one of \('parquet', 'sparse'\), got 'csv'"):
        open_source(str(tmp_path / "x.parquet"), format="csv")
