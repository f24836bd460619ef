"""A job killed (SIGKILL) after a checkpoint resumes from it: observably, and to the same bits.

A fit started afresh also ends with the uninterrupted run's bits, so equality alone does not
show a resume: each test also asserts that the resumed job said where it resumed, skipped the
iterations (or online steps) it had, and made fewer passes over the data.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from daskgmm.cli import main

from .conftest import write_data

#: Runs ``daskgmm ARGV`` and SIGKILLs its process group right after the checkpoint of iteration N
#: (fit, select: the progress line comes after the save) or the snapshot of online step N (update)
#: is written: a kill at a known point of the job, whatever the machine's speed.
KILLED_AFTER = r"""
import os, signal, sys
from daskgmm.cli import runtime as cli_runtime
from daskgmm.io import modelfiles as persist

n = int(sys.argv[1])
kill = lambda: os.killpg(os.getpgid(0), signal.SIGKILL)
progress = cli_runtime.Reporter.progress

def progress_then_kill(self, event, **info):
    progress(self, event, **info)
    if event == "iteration" and info["iteration"] == n:
        kill()

save_model, saves = persist.save_model, []

def save_then_kill(est, path, *args, **kw):
    save_model(est, path, *args, **kw)
    if os.path.basename(os.fspath(path)) == "update-model":
        saves.append(path)
        if len(saves) == n:
            kill()

cli_runtime.Reporter.progress, persist.save_model = progress_then_kill, save_then_kill
from daskgmm.cli import main
sys.exit(main(sys.argv[2:]))
"""


def kill_after(n, argv, timeout=120):
    """Run the command in its own process group, killed after iteration (or step) ``n``; its stderr."""
    p = subprocess.run([sys.executable, "-c", KILLED_AFTER, str(n), *map(str, argv)], capture_output=True,
                       text=True, timeout=timeout, start_new_session=True)
    assert p.returncode == -signal.SIGKILL, p.stderr
    return p.stderr


@pytest.fixture(scope="module")
def cluster():
    """A cluster the jobs share (``--scheduler``), so that each job does not start its own."""
    import dask
    from distributed import LocalCluster

    from daskgmm.engine.cluster import CLUSTER_CONFIG

    with dask.config.set(CLUSTER_CONFIG):
        c = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                         dashboard_address=None, memory_limit="1GiB")
    yield c.scheduler_address
    c.close()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume") / "data"
    write_data(d, n=12_000, d=3, k=3, files=2)
    return d


def run(argv, capsys):
    """The command in this process: its metrics and stderr."""
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    metrics = next(argv[i + 1] for i, a in enumerate(argv) if a == "--metrics-out")
    return json.loads(open(metrics).read()), err


def same_arrays(a, b):
    with np.load(os.path.join(a, "arrays.npz")) as x, np.load(os.path.join(b, "arrays.npz")) as y:
        assert set(x.files) == set(y.files)
        for k in x.files:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def iteration_lines(err):
    return [int(m) for m in re.findall(r"^daskgmm: iter +(\d+)", err, flags=re.M)]


def assert_resumed(err, metrics, ref, at):
    """The resumed job said so, started after iteration ``at`` and made ``at`` fewer EM passes."""
    assert f"resumed from checkpoint at iteration {at}:" in err, err
    assert metrics["resumed_from_iteration"] == at and ref["resumed_from_iteration"] == 0
    assert iteration_lines(err)[0] == at + 1
    # the passes before the loop (scan, priors) are made again; the initialisation's and the
    # iterations the checkpoint had are not
    assert ref["passes"] - metrics["passes"] > at


@pytest.mark.parametrize("estimator", ["gaussian", "bayesian"])
def test_a_killed_fit_resumes_from_its_checkpoint(cluster, data, tmp_path, capsys, estimator):
    ck = tmp_path / "ck"
    job = ["fit", data, "--columns", "f0,f1,f2", "--id-column", "id", "--n-components", 3, "--estimator",
           estimator, "--covariance-type", "full", "--tol", 0, "--max-iter", 8, "--seed", 1, "--n-init", 2,
           "--chunk-rows", 1500, "--scheduler", cluster, "--checkpoint-dir", ck]
    ref, _ = run([*job, "--model-out", tmp_path / "ref", "--metrics-out", tmp_path / "ref.json", "--quiet"], capsys)
    assert not (ck / "checkpoint.npz").exists()
    err = kill_after(3, [*job, "--model-out", tmp_path / "m", "--predictions-out", tmp_path / "p"])
    assert "iter    3" in err and "iter    4" not in err
    assert (ck / "checkpoint.npz").exists() and not (tmp_path / "m").exists()
    got, err = run([*job, "--model-out", tmp_path / "m", "--predictions-out", tmp_path / "p", "--resume",
                    "--metrics-out", tmp_path / "m.json"], capsys)
    assert_resumed(err, got, ref, 3)
    assert iteration_lines(err) == [4, 5, 6, 7, 8]
    assert got["passes"] == got["init_passes"] + 5  # one pass per iteration left
    same_arrays(tmp_path / "ref", tmp_path / "m")
    assert got["lower_bounds"] == ref["lower_bounds"] and len(got["history"]) == 8
    # the history too (the model file keeps it): the first resumed iteration's change is from the saved
    # objective, as in the uninterrupted run, so a resume converges at the iteration that run does
    timeless = [[{k: v for k, v in h.items() if k != "seconds"} for h in m["history"]] for m in (got, ref)]
    assert timeless[0] == timeless[1] and timeless[0][3]["change"] is not None
    assert len(set(ref["lower_bounds"][2:])) == 6  # the parameters were still moving when the job was killed
    assert pq.read_table(tmp_path / "p").num_rows == 12_000
    assert not (ck / "checkpoint.npz").exists()  # the job finished: the next one starts afresh


def test_a_killed_select_resumes_from_its_checkpoint(cluster, data, tmp_path, capsys):
    ck = tmp_path / "ck"
    job = ["select", data, "--columns", "f0,f1,f2", "--k-min", 1, "--k-max", 3, "--covariance-types", "full,diag",
           "--kinds", "gaussian,bayesian", "--tol", 0, "--max-iter", 6, "--seed", 2, "--chunk-rows", 1500,
           "--scheduler", cluster, "--checkpoint-dir", ck]
    ref, _ = run([*job, "--out", tmp_path / "ref", "--metrics-out", tmp_path / "ref.json", "--quiet"], capsys)
    err = kill_after(2, [*job, "--out", tmp_path / "sel"])
    assert "iter    2" in err and "iter    3" not in err and not (tmp_path / "sel").exists()
    got, err = run([*job, "--out", tmp_path / "sel", "--resume", "--metrics-out", tmp_path / "m.json"], capsys)
    assert_resumed(err, got, ref, 2)
    assert iteration_lines(err) == [3, 4, 5, 6]
    assert got["candidates"] == ref["candidates"] and got["best"] == ref["best"]
    same_arrays(tmp_path / "ref" / "model", tmp_path / "sel" / "model")
    assert not (ck / "checkpoint.npz").exists()


def test_a_killed_update_resumes_after_its_last_step(cluster, data, tmp_path, capsys):
    ck = tmp_path / "ck"
    assert main(["fit", str(data), "--columns", "f0,f1,f2", "--n-components", "3", "--max-iter", "3", "--seed", "0",
                 "--scheduler", cluster, "--model-out", str(tmp_path / "base"), "--quiet"]) == 0
    job = ["update", data, "--model", tmp_path / "base", "--passes", 4, "--chunk-rows", 1500, "--scheduler", cluster,
           "--checkpoint-dir", ck]
    ref, _ = run([*job, "--model-out", tmp_path / "ref", "--metrics-out", tmp_path / "ref.json", "--quiet"], capsys)
    assert ref["resumed_steps"] == 0 and ref["steps_run"] == 4
    err = kill_after(2, [*job, "--model-out", tmp_path / "m"])
    assert "step 2:" in err and "step 3:" not in err and not (tmp_path / "m").exists()
    got, err = run([*job, "--model-out", tmp_path / "m", "--resume", "--metrics-out", tmp_path / "m.json"], capsys)
    assert "resumed from checkpoint after 2 step(s)" in err
    assert got["resumed_steps"] == 2 and got["steps_run"] == 2
    assert [int(s) for s in re.findall(r"^daskgmm: step (\d+):", err, flags=re.M)] == [3, 4]  # batches 3 and 4
    same_arrays(tmp_path / "ref", tmp_path / "m")
    assert [h["lower_bound"] for h in got["history"]] == [h["lower_bound"] for h in ref["history"]]
    assert not (ck / "checkpoint.npz").exists() and not (ck / "update-model").exists()


#: Runs ``daskgmm ARGV`` and SIGKILLs its process group right after the commit of its model (and
#: predictions), before the job removes its checkpoint.
KILLED_AFTER_COMMIT = r"""
import os, signal, sys
from daskgmm.cli import fit as cli_fit

commit = cli_fit.commit_model_and_predictions

def commit_then_kill(*args, **kw):
    commit(*args, **kw)
    os.killpg(os.getpgid(0), signal.SIGKILL)

cli_fit.commit_model_and_predictions = commit_then_kill
from daskgmm.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_an_update_in_place_killed_after_its_commit_does_not_learn_the_rows_twice(cluster, data, tmp_path, capsys):
    """``update --model M --model-out M`` killed between its commit and the removal of its checkpoint: the rerun
    (a scheduled job run again after a crash) finds M already the job's result and ends with the model one
    uninterrupted run gives; it learnt the batch a second time, on the updated model, before (user-trial-r14)."""
    import shutil

    from daskgmm.io.modelfiles import load_model

    ck = tmp_path / "ck"
    assert main(["fit", str(data), "--columns", "f0,f1,f2", "--n-components", "3", "--max-iter", "3", "--seed", "0",
                 "--scheduler", cluster, "--model-out", str(tmp_path / "base"), "--quiet"]) == 0
    shutil.copytree(tmp_path / "base", tmp_path / "m")
    job = ["update", data, "--passes", 2, "--chunk-rows", 1500, "--scheduler", cluster, "--checkpoint-dir", ck,
           "--resume"]
    run([*job, "--model", tmp_path / "base", "--model-out", tmp_path / "ref", "--metrics-out", tmp_path / "ref.json",
         "--quiet"], capsys)
    in_place = [*job, "--model", tmp_path / "m", "--model-out", tmp_path / "m", "--predictions-out", tmp_path / "p"]
    p = subprocess.run([sys.executable, "-c", KILLED_AFTER_COMMIT, *map(str, in_place)], capture_output=True,
                       text=True, timeout=120, start_new_session=True)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert (ck / "checkpoint.npz").exists() and load_model(tmp_path / "m").n_batches_ == 3
    same_arrays(tmp_path / "ref", tmp_path / "m")
    got, err = run([*in_place, "--metrics-out", tmp_path / "m.json"], capsys)
    assert "committed its model to" in err and "nothing left to learn" in err, err
    assert "step " not in err and "checkpoint_discarded" not in got
    assert (got["resumed_steps"], got["steps_run"], got["n_batches"]) == (2, 0, 3)
    same_arrays(tmp_path / "ref", tmp_path / "m")
    assert [h["lower_bound"] for h in got["history"]] == [h["lower_bound"] for h in
                                                          json.loads((tmp_path / "ref.json").read_text())["history"]]
    assert pq.read_table(tmp_path / "p").num_rows == 12_000
    assert not (ck / "checkpoint.npz").exists() and not (ck / "update-model").exists()


def test_a_checkpoint_of_rewritten_files_is_not_resumed(cluster, data, tmp_path, capsys):
    """Same file names, row counts and columns, rewritten since the checkpoint was saved (and so
    other values): the checkpoint is another job's, and the fit starts afresh."""
    d = tmp_path / "d"
    write_data(d, n=6000, d=3, k=3, files=2, seed=0)
    ck = tmp_path / "ck"
    job = ["fit", d, "--columns", "f0,f1,f2", "--n-components", 3, "--tol", 0, "--max-iter", 6, "--seed", 1,
           "--chunk-rows", 1500, "--scheduler", cluster, "--checkpoint-dir", ck, "--model-out", tmp_path / "m",
           "--metrics-out", tmp_path / "m.json"]
    kill_after(3, job)
    assert (ck / "checkpoint.npz").exists()
    time.sleep(0.01)  # another modification time, even on a coarse clock
    write_data(d, n=6000, d=3, k=3, files=2, seed=7)
    got, err = run([*job, "--resume"], capsys)
    assert "not resumed: written for a different job (differs in: files)" in err, err
    assert got["checkpoint_discarded"].startswith("written for a different job")
    assert got["resumed_from_iteration"] == 0 and iteration_lines(err) == [1, 2, 3, 4, 5, 6]
    assert main([str(a) for a in job[:-4]] + ["--model-out", str(tmp_path / "ref"), "--quiet"]) == 0
    same_arrays(tmp_path / "ref", tmp_path / "m")
