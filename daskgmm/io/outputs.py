"""Atomic outputs: staged directories, a lock per target, joint commits, ``_SUCCESS``.

A job writes each output into a staging directory beside its target (owned by its
pid), takes the target's advisory lock for as long as it writes, and renames the
staging directory into place when every part is written; ``fit`` commits model and
predictions as one unit. A job that fails leaves the previous output byte for byte,
and the next job repairs what a killed one left between two renames.

On object stores, which have no rename, the same steps are carried out by
:mod:`daskgmm.io.store` (copy object by object, ``_SUCCESS`` last, a journal
rolled forward by the next job; a lock by conditional writes on S3).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import posixpath
import uuid

import daskgmm.engine.stop as stop
import daskgmm.io.store as store
from daskgmm.io.files import DataError, cleaning_up, get_fs, is_local, note_silent, output_over_inputs, strip_protocol
from daskgmm.io.store import OutputBusyError

#: The targets this process committed last (a command commits one to three): a stop after them must not say
#: that nothing was written (daskgmm.cli). Bounded, for a long-lived process that saves model after model.
_committed: collections.deque = collections.deque(maxlen=16)


def committed() -> list[str]:
    """The outputs committed (swapped into place, complete) since :func:`forget_committed`, in order."""
    return list(_committed)


def forget_committed() -> None:
    """Start a new record of :func:`committed` (a command's start)."""
    _committed.clear()


def _local(fs) -> bool:
    return is_local(fs)


def write_whole(path: str, write, fs=None) -> None:
    """Write one file so that readers see the old content or the new, whole, never a part.

    ``write(f)`` writes into a binary file object. On a local disk it goes to a temporary
    file beside ``path``, flushed to disk, then renamed over it (a kill leaves the old file
    and no temporary); on an object store it is one PUT of the whole object.

    Parameters
    ----------
    path : str
        The file (on ``fs``: its path without protocol).
    write : callable
        ``write(f)``, given a writable binary file object.
    fs : fsspec.AbstractFileSystem, optional
        The file system; the local one when None.
    """
    if fs is not None and not _local(fs):
        import io

        buf = io.BytesIO()
        write(buf)
        fs.pipe_file(path, buf.getvalue())
        return
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


_held: dict = {}  # lock path -> [how many times this process holds it, the locked file descriptor]
_store_held: dict = {}  # lock URL on an object store -> [how many times held, its StoreLock]
_created: list = []  # local directories this process made for its outputs, parents first


def path_error(exc: OSError, target: str, made: bool = True) -> OSError:
    """The error of an output path whose directory could not be made (``made`` False) or written:
    a DataError (exit status 2, as a refused S3 prefix) when the path given is at fault (a file
    where a directory must go, no permission, a read-only filesystem), else an OSError (exit
    status 1: e.g. a full disk), each naming the output."""
    what = f"cannot write output {target!r}" if made else f"cannot create the directory of output {target!r}"
    why = exc.strerror or str(exc)
    if isinstance(exc, NotADirectoryError) and exc.filename:
        return DataError(f"{what}: {exc.filename} is a file, not a directory; choose another path")
    if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
        where = f" ({exc.filename})" if exc.filename else ""
        return DataError(f"{what}: {why}{where}; choose another path, or one this user may write")
    return OSError(f"{what}: {why}")


#: What a write into an output's staging fails with when the output's place is at fault (full, over its
#: quota, read-only, refused), not the data or the job: named by :func:`naming_output`.
_PLACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


def naming_output(exc: BaseException, target) -> BaseException:
    """``exc``, or for an OSError of the output's place (a full disk: "[Errno 28] No space left on
    device", which said nothing of which output) one that names ``target``, as
    :func:`write_parts_into` names the predictions'."""
    if not isinstance(exc, OSError) or exc.errno not in _PLACE_ERRNOS or "cannot write output" in str(exc):
        return exc
    return OSError(exc.errno, f"cannot write output {target}: {exc.strerror or exc}")


def make_directories(path: str) -> None:
    """Make the local directory ``path`` and its missing parents, remembering the ones made here.

    What this process made and left empty goes again when it holds no output lock any more
    (:func:`remove_made_directories`): a failed job leaves no empty directories behind, and
    never removes one that was there before it.
    """
    path = os.path.abspath(path)
    missing = []
    head = path
    while head and not os.path.isdir(head):
        missing.append(head)
        parent = os.path.dirname(head)
        if parent == head:
            break
        head = parent
    for d in reversed(missing):
        try:
            os.mkdir(d)
        except FileExistsError:  # another job made it meanwhile: it is not ours to remove
            if not os.path.isdir(d):  # a file where a directory must go ("File exists" said nothing)
                raise NotADirectoryError(errno.ENOTDIR, f"{d} is a file, not a directory", d) from None
        else:
            _created.append(d)


def in_made_directory(parent: str, act, attempts: int = 20):
    """``act()`` once the local directory ``parent`` and its missing parents exist
    (:func:`make_directories`), its result returned. A failed job removes the empty directories it
    made (:func:`remove_made_directories`); when it removes this one between its making here and
    ``act``'s file in it, the directory is made again, up to ``attempts`` times: the file, once
    there, keeps it."""
    for attempt in range(attempts):
        try:
            make_directories(parent)
            return act()
        except FileNotFoundError:
            if attempt == attempts - 1:
                raise


def remove_made_directories() -> None:
    """Remove the directories :func:`make_directories` made that are empty now, deepest first, and
    forget them all (one holding an output is the user's from now on).

    ``rmdir`` removes only an empty directory, atomically, so another job's lock, staging
    directory, journal or output keeps its directory. A job that made the same directory
    its own an instant before (``makedirs``, then its lock file) may find it gone before it
    creates its lock: :meth:`OutputLock.acquire` makes it again and retries.
    """
    while _created:
        d = _created.pop()
        with contextlib.suppress(OSError):  # not empty, gone, or not ours to remove any more
            os.rmdir(d)


def _flock(lock_path: str) -> int:
    """Open ``lock_path`` and lock it exclusively (``flock``), without waiting; returns the descriptor.

    The kernel releases the lock when its holder exits, however it dies (a killed job leaves
    a file nobody locks), and across the hosts of a network file system that supports it,
    where a pid means nothing. Raises BlockingIOError when another process holds it.
    """
    import fcntl

    while True:
        fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            os.close(fd)
            raise
        try:  # the previous holder removes the file as it releases: lock the file the path names now
            if os.fstat(fd).st_ino == os.stat(lock_path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


class OutputLock:
    """An advisory lock on one output target: the file ``.NAME.lock`` beside it, locked with
    ``flock`` (released by the kernel when its holder dies: a killed job's lock is free) and
    holding the owner's pid for messages. Re-entrant within one process. On S3 the lock is an
    object created by a conditional write (:class:`daskgmm.io.store.StoreLock`); on other
    object stores there is none.

    Creating the lock is also the check that the output's directory is writable,
    made before any data pass; on an object store, that its bucket exists (never
    created).
    """

    def __init__(self, target, storage_options=None):
        self.target = os.fspath(target)
        self.storage_options = storage_options
        self.fs = get_fs(self.target, storage_options)
        self.path = strip_protocol(self.fs, self.target).rstrip("/")
        parent, base = posixpath.split(self.path)
        self.parent = parent
        self.lock_path = posixpath.join(parent or ".", f".{base}.lock")
        self.held = False

    def acquire(self) -> OutputLock:
        if not _local(self.fs):
            return self._acquire_store()
        if self.fs.exists(self.path) and not self.fs.isdir(self.path):
            raise DataError(f"output {self.target!r} exists and is not a directory")
        if self.lock_path in _held:
            _held[self.lock_path][0] += 1
            self.held = True
            return self
        try:
            fd = self._flock()
        except BlockingIOError:
            owner = self._owner()
            raise OutputBusyError(
                f"output {self.target!r} is being written by another job"
                + (f" (pid {owner})" if owner is not None else "")
                + f"; wait for it to finish (its lock is {self.lock_path})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _held[self.lock_path] = [1, fd]
        self.held = True
        # before any pass: what a killed job left is repaired now, not when this job commits (and a tidy
        # that fails lets the lock go, as a refusal does: this process may run other jobs after)
        try:
            _tidy(self.fs, self.path)
            _check_replaceable(self.path, self.target)
        except BaseException:
            self.release()
            raise
        return self

    def _flock(self) -> int:
        """Make the output's directory and lock the lock file in it (:func:`_flock`, in
        :func:`in_made_directory`); raises BlockingIOError when another process holds it, OSError
        naming the output on other failures."""
        try:
            return in_made_directory(self.parent or ".", lambda: _flock(self.lock_path))
        except BlockingIOError:
            raise
        except OSError as exc:
            raise path_error(exc, self.target, os.path.isdir(self.parent or ".")) from None

    def _acquire_store(self) -> OutputLock:
        fs = self.fs
        store.check_bucket(fs, self.path, f"output {self.target!r}")
        fs.invalidate_cache(self.path)
        if fs.isfile(self.path):
            raise DataError(f"output {self.target!r} exists and is not a directory (an object, not a prefix)")
        first = False
        if store.is_s3(fs):
            key = store.url(fs, self.lock_path)
            if key in _store_held:
                _store_held[key][0] += 1
            else:
                _store_held[key] = [1, store.StoreLock(fs, self.lock_path, self.target).acquire()]
                first = True
        self.held = True
        if first:
            # once taken (not again by its holder: a killed joint commit's roll-forward takes its targets' locks),
            # as on a disk: a killed job's commit finished first (its objects have no _SUCCESS until then), then
            # a prefix of someone's objects refused before any pass. Other stores have no lock (nothing may be
            # repaired there, so nothing is refused either)
            try:
                store.tidy(fs, self.parent, posixpath.basename(self.path), self.lock_of)
                _check_replaceable(self.path, self.target, fs)
            except BaseException:
                self.release()
                raise
        return self

    def lock_of(self, target) -> OutputLock:
        """The lock of another output of this store (a joint commit a killed job left to finish)."""
        return OutputLock(store.url(self.fs, target), self.storage_options)

    def verify(self) -> None:
        """Raise :class:`OutputBusyError` if this job no longer holds the lock (on S3: another job
        took it over after this one went unresponsive longer than the lease); a no-op elsewhere."""
        if self.held and not _local(self.fs) and store.is_s3(self.fs):
            _store_held[store.url(self.fs, self.lock_path)][1].verify()

    def _owner(self) -> int | None:
        try:
            with open(self.lock_path, encoding="ascii") as f:
                return int(f.read().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if not _local(self.fs):
            key = store.url(self.fs, self.lock_path)
            entry = _store_held.get(key)
            if entry is not None:
                entry[0] -= 1
                if entry[0] == 0:
                    del _store_held[key]
                    entry[1].release()
            return
        entry = _held[self.lock_path]
        entry[0] -= 1
        if entry[0] == 0:
            del _held[self.lock_path]
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.lock_path)  # while locked: a job that opened it meanwhile sees another file
            os.close(entry[1])
            if not _held:  # every output of the job is written or given up: no empty directory stays
                remove_made_directories()

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        if exc[1] is not None:
            note_silent(exc[1])  # a silent store: the release waits the clean-up deadline at most
        self.release()


def _check_replaceable(path: str, target, fs=None) -> None:
    """Refuse (:class:`DataError`) to replace a directory that holds files but no ``_SUCCESS``: not an output
    of a job that finished (every output is committed with its marker, and a killed commit is repaired
    before this), so replacing it whole would delete what someone put there ("--model-out ~/work"). ``fs``:
    an object store's, where the directory is the prefix ``path/`` (else the local disk)."""
    try:
        if fs is None:
            names = sorted(os.listdir(path))
        else:
            fs.invalidate_cache(path)
            names = sorted(posixpath.basename(e.rstrip("/")) for e in fs.ls(path, detail=False)
                           if e.rstrip("/") != path)
    except (FileNotFoundError, NotADirectoryError):
        return
    if names and "_SUCCESS" not in names:
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise DataError(f"output {os.fspath(target)!r} is a directory that holds {len(names)} entr"
                        f"{'y' if len(names) == 1 else 'ies'} ({shown}) but no _SUCCESS marker: not a "
                        "finished output, and writing it would delete them; remove it, or choose another path")


def _staging_owner(name: str, prefix: str) -> int | None:
    """The pid in a staging directory's name ``PREFIX<pid>-<hex>`` (None for old names)."""
    head = name[len(prefix):].split("-", 1)[0]
    return int(head) if head.isdigit() and "-" in name[len(prefix):] else None


def _rm_retrying(fs, path, seconds=5.0):
    """Remove a directory that tasks may still be writing into (they were cancelled)."""
    import time

    deadline = time.monotonic() + seconds
    while True:
        with contextlib.suppress(FileNotFoundError, OSError):
            fs.rm(path, recursive=True)
        if not fs.exists(path) or time.monotonic() > deadline:
            return
        time.sleep(0.1)


class StagedOutput:
    """One output target written into a staging directory beside it (see :func:`staged_directory`)."""

    def __init__(self, target, storage_options=None):
        self.storage_options = storage_options
        self.lock = OutputLock(target, storage_options)
        self.target, self.fs, self.path = self.lock.target, self.lock.fs, self.lock.path
        self.parent, self.base = posixpath.split(self.path)
        self.staging = None

    def begin(self) -> str:
        """Take the lock (which tidies what killed jobs left, when first taken) and make the staging directory."""
        fs, parent, base = self.fs, self.parent, self.base
        self.lock.acquire()
        prefix = f".{base}.staging-"
        if not _local(fs):
            if not store.is_s3(fs):  # on S3 the lock's acquire has done it (OutputLock.acquire)
                try:
                    store.tidy(fs, parent, base, self.lock.lock_of)
                except BaseException:
                    self.lock.release()
                    raise
            # an object store has no directories: the staging prefix exists once a part is written
            self.staging = posixpath.join(parent, f"{prefix}{os.getpid()}-{uuid.uuid4().hex[:12]}")
            return self.staging
        # what killed jobs left was tidied when the lock was first taken (OutputLock.acquire)
        self.staging = posixpath.join(parent, f"{prefix}{os.getpid()}-{uuid.uuid4().hex[:12]}")
        try:
            fs.makedirs(self.staging, exist_ok=False)
        except OSError as exc:
            self.lock.release()
            raise OSError(f"cannot write output {self.target!r}: {exc.strerror or exc}") from None
        return self.staging

    def finish(self) -> None:
        """Write ``_SUCCESS`` into the staging directory (the output is complete)."""
        if not _local(self.fs):
            store.write_marker(self.fs, self.staging, [])
            return
        with self.fs.open(posixpath.join(self.staging, "_SUCCESS"), "wb"):
            pass

    def swap(self) -> None:
        """Rename the complete staging directory into place (the old output set aside, then removed);
        on an object store, copy it into place under a journal (:func:`daskgmm.io.store.commit`)."""
        fs, path = self.fs, self.path
        if not _local(fs):
            store.commit(fs, [(self.staging, path)], verify=[self.lock.verify],
                         committing=lambda: setattr(self, "staging", None))
            _committed.append(str(self.target))
            return
        if fs.exists(path):
            old = posixpath.join(self.parent, f".{self.base}.old-{uuid.uuid4().hex[:12]}")
            _move(fs, path, old)
            _move(fs, self.staging, path)
            _committed.append(str(self.target))
            fs.rm(old, recursive=True)
        else:
            _move(fs, self.staging, path)
            _committed.append(str(self.target))
        self.staging = None

    def abort(self, exc: BaseException | None = None) -> None:
        """Remove the staging directory (the job failed, with ``exc`` when known). On a store that went
        silent, within the clean-up deadline (:func:`daskgmm.io.files.cleaning_up`), else left, and named."""
        if exc is not None:
            note_silent(exc)
        if self.staging is not None:
            if _local(self.fs):
                _rm_retrying(self.fs, self.staging)
            else:
                with cleaning_up(self.fs, f"{store.url(self.fs, self.staging)}/ (the staging of output {self.target}, "
                                          "never complete there: the next job writing it removes it)"):
                    store.remove_prefix(self.fs, self.staging, cleanup=True)
            self.staging = None

    def release(self) -> None:
        self.lock.release()


def _tidy(fs, path):
    """Repair what killed jobs left beside the output ``path`` (whose lock the caller holds).

    Their joint commits are finished or dropped (:func:`_finish_commits`), their staging
    directories removed, and an output a swap had set aside put back when the swap did not
    finish (or removed when it did).
    """
    parent, base = posixpath.split(path)
    prefix, old_prefix = f".{base}.staging-", f".{base}.old-"
    entries = []
    with contextlib.suppress(FileNotFoundError):
        entries = [e.rstrip("/") for e in fs.ls(parent or ".", detail=False)]
    _finish_commits(fs, entries, f".{base}.commit-")
    for entry in entries:
        name = posixpath.basename(entry)
        if name.startswith(prefix):
            owner = _staging_owner(name, prefix)
            # under the lock no other live job writes here; a staging of ours is a retry's
            if owner is None or owner == os.getpid() or not store.pid_alive(owner):
                with contextlib.suppress(FileNotFoundError):
                    fs.rm(entry, recursive=True)
    olds = sorted(e for e in entries if posixpath.basename(e).startswith(old_prefix))
    if olds and not fs.exists(path):
        # a job killed between the two renames of a swap: the set-aside output is the last complete one
        _move(fs, olds.pop(), path)
    for entry in olds:
        with contextlib.suppress(FileNotFoundError):
            fs.rm(entry, recursive=True)


def _journal(target: str, tag: str) -> str:
    """The journal of commit ``tag`` beside ``target``."""
    parent, base = posixpath.split(target)
    return posixpath.join(parent or ".", f".{base}.commit-{tag}")


def _finish_commits(fs, entries, prefix):
    """Finish or drop the joint commits of killed jobs whose journals are among ``entries``.

    A commit writes its journal (every (staging, target) pair) beside each of its targets
    before its first swap. With every journal there, the swaps may have begun: the rest
    are done (roll forward). With one missing, the job was killed while writing them
    (or after its last swap, while removing them): no swap is left to do, and the commit
    is dropped; each target keeps its output, and its staging directories, a dead job's,
    go when that target is next written. So either every output of the commit goes in or
    none does, whichever of them the next job writes.
    """
    import json

    for entry in entries:
        name = posixpath.basename(entry)
        if not name.startswith(prefix):
            continue
        owner = _staging_owner(name, prefix)
        if owner is not None and owner != os.getpid() and store.pid_alive(owner):
            continue
        tag, pairs = name[len(prefix):], []
        if not tag.endswith(".tmp"):  # a journal still being written: no swap had begun
            try:
                with fs.open(entry, "r") as f:
                    pairs = json.load(f)
            except (OSError, ValueError):
                pairs = []
        journals = [_journal(target, tag) for _, target in pairs]
        if pairs and all(fs.exists(j) for j in journals):
            for staging, target in pairs:
                if fs.exists(posixpath.join(staging, "_SUCCESS")):
                    if fs.exists(target):
                        fs.rm(target, recursive=True)
                    _move(fs, staging, target)
        for j in [*journals, entry]:
            with contextlib.suppress(FileNotFoundError):
                fs.rm(j)


def commit_together(outputs: list[StagedOutput]) -> None:
    """Swap several complete staged outputs into place as one unit.

    A journal listing every (staging, target) pair is written beside each
    target first; a job killed during the swaps is rolled forward by the next
    job that writes any of these outputs, so a model is never left beside
    another job's predictions.
    """
    import json

    outputs = [o for o in outputs if o.staging is not None]
    stop.check()  # a stop asked for while the outputs were written: none of them goes in
    for o in outputs:
        o.finish()
    remote = [o for o in outputs if not _local(o.fs)]
    if remote:
        if len(remote) < len(outputs) or len({id(o.fs) for o in outputs}) > 1:
            raise ValueError("outputs committed together must be on one filesystem: "
                             + ", ".join(o.target for o in outputs))

        def committing():  # an interruption from here on leaves the stagings to the journal
            for o in outputs:
                o.staging = None

        store.commit(remote[0].fs, [(o.staging, o.path) for o in outputs], verify=[o.lock.verify for o in outputs],
                     committing=committing)
        _committed.extend(str(o.target) for o in outputs)
        return
    if len(outputs) < 2 or not all(_local(o.fs) for o in outputs):
        for o in outputs:
            o.swap()
        return
    pairs = [[o.staging, o.path] for o in outputs]
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    journals = []
    for o in outputs:
        j = _journal(o.path, tag)
        write_whole(j, lambda f: f.write(json.dumps(pairs).encode()))
        journals.append(j)
    try:
        for o in outputs:
            o.swap()
    except BaseException as exc:
        # every journal is written, so the commit is decided: what is not swapped in yet stays
        # staged for the next job to roll forward (a SIGTERM here must not leave half a commit)
        for o in outputs:
            o.staging = None
        store.commit_under_way(exc, [o.target for o in outputs])
        raise
    for j in journals:
        with contextlib.suppress(FileNotFoundError):
            os.remove(j)


@contextlib.contextmanager
def staged_directory(target, storage_options=None):
    """Write into a staging directory beside ``target``; swap it in only on success.

    The target is locked against other jobs for the duration (:class:`OutputLock`;
    a live owner makes this raise :class:`OutputBusyError`). On success, a
    ``_SUCCESS`` marker is written into the staging directory and it replaces
    ``target`` (on a local filesystem by two renames: the old output is set
    aside, the new one renamed into place). On any exception the staging
    directory is removed and ``target`` is untouched. Leftovers of a killed job
    for the same target are handled first: its staging directories are
    removed, and an output set aside by a swap that did not finish is put back
    (or removed, when the swap did finish).

    Yields
    ------
    fs : fsspec.AbstractFileSystem
    staging : str
    """
    out = StagedOutput(target, storage_options)
    out.begin()
    try:
        try:
            yield out.fs, out.staging
            stop.check()
            out.finish()
        except BaseException as exc:
            out.abort(exc)
            named = naming_output(exc, out.target)
            if named is not exc:
                raise named from None
            raise
        out.swap()
    finally:
        out.release()


def _move(fs, src, dst):
    os.rename(src, dst)  # atomic on one filesystem (object stores copy instead: see outputs_store)


def _arrow(values, arrow_type=None):
    """A 1-D array as an Arrow array; numbers from their buffer (``pa.array`` imports pandas,
    ~40 MiB in a worker that has no other use for it). ``arrow_type``: the type to write a column of
    objects or dates in (an id column's, :func:`daskgmm.io.files.written_id_type`), where inferring it
    from one part's values gives each part its own (a decimal's precision, null for a part of nulls
    only, no time zone), and pyarrow then cannot read the parts as one dataset."""
    import numpy as np
    import pyarrow as pa

    v = np.asarray(values)
    if v.ndim != 1 or v.dtype.kind not in "iuf":
        if arrow_type is not None:
            try:
                return pa.array(v, type=arrow_type, from_pandas=v.dtype == object)
            except (pa.ArrowException, TypeError, ValueError):
                pass  # values the type does not hold (ids given in Python): as inferred
        return pa.array(v, from_pandas=v.dtype == object)  # None and NaN among objects are nulls
    v = np.ascontiguousarray(v)
    return pa.Array.from_buffers(pa.from_numpy_dtype(v.dtype), len(v), [None, pa.py_buffer(v)])


def _write_part(fs, directory, index, columns, *args, types=None):
    """Write one Parquet part file from a dict of equal-length arrays, or from what a
    callable returns (called here with ``args``: then the part exists only inside this task);
    ``types``: ``{column: Arrow type}`` for columns of objects (:func:`_arrow`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if callable(columns):
        columns = columns(*args)
    types = types or {}
    table = pa.table({k: _arrow(v, types.get(k)) for k, v in columns.items()})
    rows = table.num_rows
    path = posixpath.join(directory, f"part-{index:05d}.parquet")
    if not _local(fs):
        from daskgmm.io.files import bound_s3

        bound_s3(fs)  # in a worker: its requests bounded as the command's are
    try:
        with fs.open(path, "wb") as f:
            pq.write_table(table, f, write_page_checksum=True)  # readers can verify every page
    except Exception as exc:  # disk full, permissions: name the output
        from daskgmm.io.files import no_credentials, store_silent, this_worker, worker_credentials

        if not (isinstance(exc, OSError) or no_credentials(exc)) or store_silent(exc):
            raise  # a silent store by its type, which the command's clean-up goes by (io.files.note_silent)
        reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
        by = this_worker()
        if by and not _local(fs) and (isinstance(exc, PermissionError) or no_credentials(exc)):
            # the command checked the output with its own credentials; the parts are written by the workers
            reason += f" (to {by}: {worker_credentials('writes')})"
        raise _os_error(getattr(exc, "errno", None), f"cannot write {path}: {reason}") from None
    finally:
        del table
        pa.default_memory_pool().release_unused()  # as after reads: Arrow's allocator keeps freed pages
    return rows


def _os_error(number, text: str) -> OSError:
    """``OSError(number, text)``, or ``OSError(text)`` without an errno: an object store's refusal has none,
    and ``OSError(None, text)`` reads "[Errno None] text"."""
    return OSError(number, text) if number is not None else OSError(text)


def write_parts(target, parts, storage_options=None, name="part", inputs=None, types=None) -> int:
    """Write Dask-computed column dicts as Parquet parts into ``target``, atomically.

    Parameters
    ----------
    target : str
        Output directory (replaced as a whole on success).
    parts : list of dask.delayed.Delayed, callables or tuples ``(callable, *args)``
        Each computes a dict ``{column name: 1-D array}`` for one part. A callable
        is called (with ``args``, taking none without them) by the task that writes its
        part, so that a worker holds one part per task it runs, never one waiting to be
        written. Futures among ``args`` (a model's parameters sent to the workers once,
        :func:`daskgmm.fitting.predict.shipped`) reach it as their values.
    name : str
        The write tasks are ``daskgmm-{name}-{i}-…``.
    inputs : Dask collection, optional
        What the parts are computed from: when it reads Parquet through daskgmm, ``target`` may not
        be one of its files, a directory above one, or inside a directory it reads (``ValueError``).
    types : dict, optional
        ``{column: pyarrow.DataType}``: the type every part writes a column of objects or dates in
        (the id columns of a Parquet input: :attr:`daskgmm.io.parquet.ParquetSource.id_types`).

    Returns
    -------
    int
        Rows written.
    """
    if inputs is not None:
        problem = output_over_inputs(target, inputs)
        if problem:
            raise ValueError(f"{problem}: writing it would replace or mix with what it is computed from; "
                             "give an output path apart from the inputs")
    with staged_directory(target, storage_options) as (fs, staging):
        return write_parts_into(fs, staging, parts, name, types)


def write_parts_into(fs, directory, parts, name="part", types=None) -> int:
    """Compute ``parts`` (as in :func:`write_parts`, and its ``types``) and write each as a part file of
    ``directory``."""
    import dask

    from daskgmm.engine.cluster import active_client, local_scheduler, wait_bounded

    tag = uuid.uuid4().hex[:12]
    writes = [dask.delayed(_write_part, pure=False)(fs, directory, i, *(p if isinstance(p, tuple) else (p,)),
                                                     types=types, dask_key_name=f"daskgmm-{name}-{i}-{tag}")
              for i, p in enumerate(parts)]
    client = active_client()
    if client is None:
        return int(sum(dask.compute(*writes, scheduler=local_scheduler())))
    futures = client.compute(writes)
    try:
        # a store gone silent fails every part after its own bound (~30 s): the first ends the wait, not the
        # last of as many rounds as there are parts per worker thread
        from daskgmm.io.files import store_silent

        wait_bounded(client, futures, "write", ends=store_silent)
        return int(sum(client.gather(futures)))
    except OSError as exc:  # disk full, permissions: name the output, not only its staging part
        parent, name = posixpath.split(directory.rstrip("/"))
        target = posixpath.join(parent, name[1:].split(".staging-")[0]) if ".staging-" in name else directory
        if not _local(fs):
            target = store.url(fs, target)
        raise _os_error(exc.errno, f"cannot write output {target}: {exc.strerror or exc}") from None
    finally:
        # no write task may still run when the staging directory is removed after a failure
        client.cancel(futures)


__all__ = [
    "OutputBusyError",
    "OutputLock",
    "StagedOutput",
    "commit_together",
    "in_made_directory",
    "make_directories",
    "remove_made_directories",
    "staged_directory",
    "write_parts",
    "write_parts_into",
]
