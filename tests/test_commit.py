"""The joint commit of model and predictions: a job killed at any point of it is repaired by the next.

``commit_together`` changes the disk in a fixed order (the ``_SUCCESS`` markers, a journal beside
each output, then two renames per output and the removal of the old one, then the journals).
A helper process forks one job per point of that order and SIGKILLs it right after that point,
each on its own pair of outputs, so every state a kill can leave is on disk; the next job
(whichever output it takes first) must leave both outputs from the same job: both old, or both
new once the commit was decided.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from daskgmm.cli import main
from daskgmm.io.outputs import OutputLock, StagedOutput, commit_together

from .conftest import write_data

#: One job per kill point (twice: one copy of its state for each output the next job takes first): in
#: DIR/<k>-<first>, outputs a/model and b/preds hold "old"; a forked child writes "new"
#: into their staging directories and commits them together, SIGKILLed after the k-th change to the disk.
#: Each change is recorded (DIR/<k>/steps) just before the kill, so the test knows where each job died.
FORK_AND_KILL = r"""
import json, os, re, signal, sys
from daskgmm.io import outputs

root, points = sys.argv[1], int(sys.argv[2])

def write(directory, text, success):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "v.txt"), "w") as f:
        f.write(text)
    if success:
        open(os.path.join(directory, "_SUCCESS"), "w").close()

for k, copy in ((k, copy) for k in range(points + 1) for copy in ("model", "preds")):
    d = os.path.join(root, f"{k}-{copy}")
    write(os.path.join(d, "a", "model"), "old", True)
    write(os.path.join(d, "b", "preds"), "old", True)
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        continue
    done = []

    def step(what):
        done.append(re.sub(r"(\.(staging|old|commit)-)\S*", r"\1", what))  # without the pids and tags
        if len(done) == k:
            with open(os.path.join(d, "steps"), "w") as f:
                json.dump(done, f)
            os.kill(os.getpid(), signal.SIGKILL)

    class Os:  # the module's os, with its changes to the disk counted
        def __getattr__(self, name):
            return getattr(os, name)

        def replace(self, a, b):
            step("journal .tmp " + os.path.basename(b))
            os.replace(a, b)
            step("journal " + os.path.basename(b))

        def remove(self, p):
            os.remove(p)
            step("remove " + os.path.basename(p))

    move, finish = outputs._move, outputs.StagedOutput.finish

    def counted_move(fs, a, b):
        move(fs, a, b)
        step(f"rename {os.path.basename(a)} -> {os.path.basename(b)}")

    def counted_finish(self):
        finish(self)
        step("_SUCCESS " + self.base)

    outs = [outputs.StagedOutput(os.path.join(d, "a", "model")), outputs.StagedOutput(os.path.join(d, "b", "preds"))]
    for o in outs:
        o.begin()
        write(o.staging, "new", False)
    fs, rm = outs[0].fs, outs[0].fs.rm

    def counted_rm(path, *a, **kw):
        rm(path, *a, **kw)
        step("rm " + os.path.basename(path))

    outputs.os, outputs._move, outputs.StagedOutput.finish, fs.rm = Os(), counted_move, counted_finish, counted_rm
    if k == 0:  # killed with the outputs staged, before the commit
        os.kill(os.getpid(), signal.SIGKILL)
    outputs.commit_together(outs)
    with open(os.path.join(d, "steps"), "w") as f:
        json.dump(done, f)
    os._exit(0)
"""

#: The changes commit_together makes, in order (k = 1 .. 14): a kill after each is tested.
PROTOCOL = [
    "_SUCCESS model", "_SUCCESS preds",
    "journal .tmp .model.commit-", "journal .model.commit-", "journal .tmp .preds.commit-", "journal .preds.commit-",
    "rename model -> .model.old-", "rename .model.staging- -> model", "rm .model.old-",
    "rename preds -> .preds.old-", "rename .preds.staging- -> preds", "rm .preds.old-",
    "remove .model.commit-", "remove .preds.commit-",
]
#: From this kill point on, the commit is decided: every journal is written.
DECIDED = PROTOCOL.index("journal .preds.commit-") + 1


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    root = tmp_path_factory.mktemp("commits")
    p = subprocess.run([sys.executable, "-c", FORK_AND_KILL, str(root), str(len(PROTOCOL) + 1)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return root


def outputs_of(d):
    return {name: ((d / side / name / "v.txt").read_text(), (d / side / name / "_SUCCESS").exists())
            for side, name in (("a", "model"), ("b", "preds"))}


def leftovers(d):
    return sorted(p.name for side in ("a", "b") for p in (d / side).iterdir() if p.name not in ("model", "preds"))


@pytest.mark.parametrize("first", ["model", "preds"])
@pytest.mark.parametrize("k", range(len(PROTOCOL) + 2))
def test_a_job_killed_anywhere_in_the_commit_is_repaired_by_the_next(killed, k, first):
    d = killed / f"{k}-{first}"
    steps = json.loads((d / "steps").read_text()) if (d / "steps").exists() else []
    (d / "steps").unlink(missing_ok=True)
    # the job died right after change k (k = 0: before the commit; past the end: it finished)
    assert len(steps) == min(k, len(PROTOCOL))
    assert steps == PROTOCOL[:len(steps)]
    targets = {"model": d / "a" / "model", "preds": d / "b" / "preds"}
    second = "preds" if first == "model" else "model"
    # the next job takes one output's lock (as every command does before any pass), then another job the other's
    want = ("new" if k >= DECIDED else "old", True)  # (version, _SUCCESS)
    for name in (first, second):
        with OutputLock(targets[name]):
            after = outputs_of(d)
            assert after == {"model": want, "preds": want}, f"killed after {steps[-1:]}, then {name} locked: {after}"
    assert leftovers(d) == [], f"killed after {steps[-1:]}"


def test_a_signal_during_the_swaps_leaves_the_commit_to_be_rolled_forward(tmp_path, monkeypatch):
    """An exception between the swaps (SIGTERM's, raised wherever the handler runs) must not
    remove what is not swapped in yet: the commit is decided, and the next job finishes it; the exception
    names the outputs of that commit."""
    from daskgmm.io import outputs

    targets = [tmp_path / "a" / "model", tmp_path / "b" / "preds"]
    for t in targets:
        t.mkdir(parents=True)
        (t / "v.txt").write_text("old")
        (t / "_SUCCESS").touch()  # a finished output, as every one replaced is
    outs = [StagedOutput(t) for t in targets]
    for o in outs:
        o.begin()
        pathlib.Path(o.staging, "v.txt").write_text("new")
    move, calls = outputs._move, []

    def interrupted_move(fs, a, b):
        calls.append(b)
        if len(calls) == 3:  # the model is in; the predictions are next
            raise KeyboardInterrupt
        move(fs, a, b)

    monkeypatch.setattr(outputs, "_move", interrupted_move)
    with pytest.raises(KeyboardInterrupt) as stopped:
        try:
            commit_together(outs)
        except BaseException:
            for o in outs:  # what commit_model_and_predictions does on any failure
                o.abort()
            raise
        finally:
            for o in outs:
                o.release()
    monkeypatch.setattr(outputs, "_move", move)
    # what the command says then, rather than "no output written" (daskgmm.cli._stopped)
    assert stopped.value.daskgmm_commit_under_way == [str(t) for t in targets]
    assert (targets[0] / "v.txt").read_text() == "new" and (targets[1] / "v.txt").read_text() == "old"
    with OutputLock(targets[1]):
        assert [(t / "v.txt").read_text() for t in targets] == ["new", "new"]
    assert sorted(os.listdir(tmp_path / "b")) == ["preds"]


#: ``daskgmm fit``, SIGKILLed right after the model is swapped in, before the predictions are.
KILLED_BETWEEN_SWAPS = r"""
import os, signal, sys
from daskgmm.io import outputs

move = outputs._move

def move_then_kill(fs, a, b):
    move(fs, a, b)
    if os.path.basename(b) == "model" and ".staging-" in a:
        os.killpg(os.getpgid(0), signal.SIGKILL)

outputs._move = move_then_kill
from daskgmm.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_fit_killed_between_its_swaps_is_rolled_forward_by_the_next_job(process_client, tmp_path, capsys):
    """A real job killed between the two swaps (model in, predictions not): the next job, even one
    that fails on bad input, leaves exactly what the killed job would have committed."""
    data = tmp_path / "data"
    write_data(data, n=3000)
    out = {"model": tmp_path / "out" / "model", "preds": tmp_path / "out" / "preds"}
    def job(k=3, *extra):
        return ["fit", str(data), "--columns", "f0,f1,f2", "--id-column", "id", "--n-components", str(k), "--seed",
                "0", "--scheduler", process_client.scheduler.address, "--quiet", *map(str, extra)]

    into = ["--model-out", out["model"], "--predictions-out", out["preds"]]
    # what the killed job would have committed: an uninterrupted run of it
    assert main(job(3, "--model-out", tmp_path / "ref", "--predictions-out", tmp_path / "refp")) == 0
    # yesterday's outputs, of another model
    assert main(job(2, *into)) == 0
    p = subprocess.run([sys.executable, "-c", KILLED_BETWEEN_SWAPS, *job(3, *into)], capture_output=True, text=True,
                       timeout=120, start_new_session=True)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert pq.read_table(out["preds"]).column("label").to_numpy().max() == 1  # still yesterday's, of 2 components
    assert any(".commit-" in n for n in os.listdir(tmp_path / "out"))
    capsys.readouterr()
    assert main(job(3, "--columns", "f0,nope", *into)) == 2  # bad input: fails after taking the locks
    assert sorted(os.listdir(tmp_path / "out")) == ["model", "preds"]
    # the killed job's model, not yesterday's (K=2) nor a mix: the reference fit's, bit for bit (where each
    # job's persisting put the chunk cut at the threads' shares does not matter: test_em.py's
    # test_a_cut_chunk_gives_the_same_bits_whichever_worker_held_it)
    with np.load(tmp_path / "ref" / "arrays.npz") as a, np.load(out["model"] / "arrays.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            np.testing.assert_array_equal(b[key], a[key], err_msg=key)
    ref, got = pq.read_table(tmp_path / "refp"), pq.read_table(out["preds"])
    assert got.sort_by("id").equals(ref.sort_by("id"))


def test_a_tidy_that_fails_lets_the_lock_go(tmp_path, monkeypatch):
    """The lock tidies what a killed job left when it is first taken; a tidy that fails (a permission, a full
    disk) raises and lets the lock go, as a refusal does: it stayed held by this process (a scheduler that runs
    job after job in one process kept every other job off that output, 'being written by another job')."""
    from daskgmm.io import outputs

    out = tmp_path / "model"

    def failing_tidy(fs, path):
        raise PermissionError(f"cannot remove {path}/part-0")

    monkeypatch.setattr(outputs, "_tidy", failing_tidy)
    with pytest.raises(PermissionError):
        OutputLock(str(out)).acquire()
    assert not outputs._held
    # another process takes it at once
    lock = str(tmp_path / ".model.lock")
    code = f"import fcntl, os; fcntl.flock(os.open({lock!r}, os.O_RDWR | os.O_CREAT), fcntl.LOCK_EX | fcntl.LOCK_NB)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_store_replace_takes_the_targets_success_away_before_anything_else():
    """On an object store (no rename), ``store.replace`` deletes the target's ``_SUCCESS`` before any of its
    objects and writes it again after the last copy: a reader that trusts ``_SUCCESS`` never reads a target
    half old, half new (only a slow S3 test caught the deletion moved after the others)."""
    from fsspec.implementations.memory import MemoryFileSystem

    from daskgmm.io import store

    class Recording(MemoryFileSystem):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.seen = []  # at every change of the target: is it complete, and what it holds

        def _note(self):
            held = {p: self.cat_file(p) for p in self.find("/b/out") if not p.endswith("_SUCCESS")}
            self.seen.append((self.exists("/b/out/_SUCCESS"), held))

        def rm_file(self, path):
            super().rm_file(path)
            self._note()

        def cp_file(self, path1, path2, **kwargs):
            super().cp_file(path1, path2, **kwargs)
            self._note()

        def pipe_file(self, path, value, **kwargs):
            super().pipe_file(path, value, **kwargs)
            self._note()

    fs = Recording(skip_instance_cache=True)
    fs.store.clear()
    names = ("part-0.parquet", "part-1.parquet", "model.json")
    for name in (*names, "_SUCCESS"):
        fs.pipe_file(f"/b/out/{name}", b"old")
        fs.pipe_file(f"/b/.out.staging/{name}", b"new")
    fs.seen.clear()
    assert store.replace(fs, "/b/.out.staging", "/b/out")
    old = {f"/b/out/{n}": b"old" for n in names}
    new = {f"/b/out/{n}": b"new" for n in names}
    for complete, held in fs.seen:
        assert not complete or held in (old, new), held
    assert fs.seen[-1] == (True, new)
    assert not fs.find("/b/.out.staging")
    assert not store.replace(fs, "/b/.out.staging", "/b/out")  # done: a second run does nothing
