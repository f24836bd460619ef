"""Model files written by an earlier daskgmm (tests/data/models, saved at commit 6032193) load and
predict, and ``daskgmm info`` reads any of them from the files alone, fast."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest

MODELS = pathlib.Path(__file__).parent / "data" / "models"
KINDS = ["gmm", "bgmm", "kmeans", "kmedoids", "studentt"]
X = np.array([[0.0, 0.0], [4.0, 4.0], [0.0, 5.0]])


@pytest.mark.parametrize("kind", KINDS)
def test_a_saved_model_of_every_kind_loads_and_predicts(kind):
    import daskgmm

    est = daskgmm.load(MODELS / kind)
    labels = est.predict(X)
    assert len(set(labels.tolist())) == 3  # the three blobs it was fitted on


def test_info_reads_every_kind_without_importing_an_estimator():
    """``info`` builds no estimator: no scikit-learn, Dask or distributed import (it answers in well
    under a second; the estimators' imports alone take 2-4 s on a loaded 2-core host)."""
    code = ("import sys; from daskgmm.cli import main\n"
            f"for kind in {KINDS!r}:\n"
            f"    assert main(['info', '--model', {str(MODELS)!r} + '/' + kind]) == 0\n"
            "print(sorted(m for m in ('dask', 'distributed', 'sklearn', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.strip().splitlines()[-1] == "[]"
    assert "estimator:        GaussianMixture" in text and "components:       3 (full covariance)" in text
    assert "effective:        3 component(s) of weight > 0.01" in text  # the Bayesian model's
    assert "clusters:         3 medoids, manhattan dissimilarity" in text and "medoid[2]:" in text
    assert "df:               " in text and "inertia:" in text


def test_info_into_a_closed_pipe_is_quiet():
    """``daskgmm info ... | head -1``: the reader goes away; no traceback, no error line."""
    p = subprocess.Popen([sys.executable, "-c", "import sys, time; from daskgmm.cli import main\n"
                          "sys.stdout.reconfigure(line_buffering=True); time.sleep(2)\n"
                          f"sys.exit(main(['info', '--model', {str(MODELS / 'gmm')!r}]))"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p.stdout.close()
    err = p.stderr.read()
    assert p.wait(timeout=60) == 1
    assert "error" not in err and "Traceback" not in err, err


@pytest.mark.parametrize("kind", ["gmm", "bgmm", "studentt"])
def test_the_first_iterations_infinite_change_of_an_older_file_loads_as_none(kind):
    """Files written before the first iteration's change was null hold "inf" there: it loads as None (no
    previous lower bound), as a new fit gives it; the other changes are numbers."""
    import daskgmm

    history = daskgmm.load(MODELS / kind).history_
    assert history[0]["change"] is None
    assert all(isinstance(h["change"], float) and np.isfinite(h["change"]) for h in history[1:])


@pytest.mark.parametrize("kind", ["kmeans", "gmm"])
def test_the_shift_a_fit_kept_for_rows_at_a_fill_value_is_saved(tmp_path, kind):
    """A fit on rows with an unmasked fill value (1e20) keeps its passes' robust shift for its predictions: the
    centres' or means' mean lies far out, and rows shifted by it lost their precision (the 600 ordinary rows in
    one cluster). The model files save it (an optional array ``shift``), so the loaded model predicts the same;
    a model of other data saves none (its files as before), and files written before it load without one."""
    from sklearn.metrics import adjusted_rand_score

    import daskgmm

    from .conftest import far_rows

    X, labels = far_rows()
    make = (lambda: daskgmm.KMeans(3, random_state=0)) if kind == "kmeans" else (
        lambda: daskgmm.GaussianMixture(3, random_state=0))
    est = make().fit(X)
    est.save(tmp_path / "m")
    loaded = daskgmm.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded._shift, est._shift)
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))
    assert adjusted_rand_score(labels, loaded.predict(X)) > 0.98  # 0.03 about the means' mean
    plain = make().fit(np.r_[X[:600], X[:5]])
    assert plain._shift is None
    plain.save(tmp_path / "p")
    assert "shift" not in np.load(tmp_path / "p" / "arrays.npz").files
    assert daskgmm.load(tmp_path / "p")._shift is None
    assert daskgmm.load(MODELS / kind)._shift is None
    # a file with a shift says format 3, which a reader of 2 (that would ignore the shift) refuses; without, 2
    import json

    from daskgmm.io import modelfiles

    assert json.loads((tmp_path / "m" / "model.json").read_text())["format_version"] == 3
    assert json.loads((tmp_path / "p" / "model.json").read_text())["format_version"] == 2
    older = pytest.MonkeyPatch()
    older.setattr(modelfiles, "FORMAT_VERSION", 2)
    try:
        with pytest.raises(modelfiles.ModelFileError, match="model format version 3 is newer"):
            daskgmm.load(tmp_path / "m")
        assert daskgmm.load(tmp_path / "p")._shift is None
    finally:
        older.undo()
