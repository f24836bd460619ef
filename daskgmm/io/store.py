"""Outputs on object stores (``s3://`` and other fsspec stores): no rename, so copy, then ``_SUCCESS``.

An object store has no atomic rename and no directories, only objects under a prefix.
An output is written under a staging prefix beside its target (``.NAME.staging-…/``),
marked complete with its own ``_SUCCESS``, and committed by a journal: the journal
(``.NAME.commit-TAG``, beside every target of the commit) lists each (staging, target)
pair, and once it is written the commit is certain to finish. Each target is then
replaced: its ``_SUCCESS`` is deleted first (readers stop trusting it), then its old
objects, then the new ones are copied in, object by object, and ``_SUCCESS`` is written
last, as Hadoop's and Spark's committers do. A job killed before its journal leaves its
targets as they were (the next job writing one deletes the staging: rolled back); a
job killed after it is rolled forward by the next job writing any of its targets. So a
target is always old and complete, new and complete, or without ``_SUCCESS`` (never
old and new objects together), and model and predictions of one ``fit`` go in together.

On S3 every target is locked by an object ``.NAME.lock`` created with a conditional
write (``If-None-Match: *``): of two jobs, exactly one creates it. Its owner refreshes
it every :data:`REFRESH_SECONDS` (a conditional write on its own ETag, which also tells
it if another job took it over); a lock not refreshed for :data:`LEASE_SECONDS` by the
store's clock, or whose owner was a process on this machine that no longer exists, is
a killed job's and is taken over (again conditionally: one taker wins). A job checks
that it still holds its locks before it commits. Other object stores (``gs://``,
``az://``) are committed the same way but not locked.

A bucket is never created: a missing one is an :class:`OutputPathError` naming the
output, before any data pass.
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import functools
import json
import os
import posixpath
import socket
import threading
import time
import uuid

from daskgmm.io.files import (
    CleanupSkipped,
    DataError,
    cleaning_up,
    cleanup_bound,
    cleanup_seconds,
    note_silent,
    raise_store_error,
    store_answered,
)

#: A lock not refreshed for this long (seconds, by the store's clock) is a killed job's.
LEASE_SECONDS = 120.0
#: How often the owner of a lock refreshes it (seconds).
REFRESH_SECONDS = 20.0
#: Attempts at taking a lock while others race for it (each a few requests).
LOCK_ATTEMPTS = 8

SUCCESS = "_SUCCESS"


class OutputPathError(DataError):
    """An output that cannot be written where it was asked for: a missing bucket, a prefix
    without write permission, a bucket given where a prefix is needed (exit status 2)."""


class OutputBusyError(RuntimeError):
    """Another live job holds the lock of an output, or took over this job's (exit status 1)."""


def protocols(fs) -> tuple:
    p = fs.protocol
    return tuple(p) if isinstance(p, (tuple, list)) else (p,)


def is_s3(fs) -> bool:
    return any(p in ("s3", "s3a") for p in protocols(fs))


def url(fs, path: str) -> str:
    """``path`` (protocol stripped) as a URL, for messages and for locks."""
    return fs.unstrip_protocol(path)


def error_code(exc) -> str | None:
    """The S3 error code behind an exception s3fs translated (``PreconditionFailed``, ``NoSuchBucket``…)."""
    cause = getattr(exc, "__cause__", None)
    response = getattr(cause, "response", None) or getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("Error", {}).get("Code")
    return None


def _precondition_failed(exc) -> bool:
    return error_code(exc) in ("PreconditionFailed", "412") or isinstance(exc, FileExistsError)


def _conflict(exc) -> bool:
    # S3 may answer 409 ConditionalRequestConflict to one of two simultaneous conditional writes
    return error_code(exc) in ("ConditionalRequestConflict", "OperationAborted", "409")


# ---------------------------------------------------------------------------
# Buckets and file targets


def check_bucket(fs, path: str, what: str) -> None:
    """Refuse (:class:`OutputPathError`) an output whose bucket does not exist, or that is a bucket.

    ``what`` names the output in the message (e.g. ``"output 's3://b/model'"``). Never
    creates anything. A store that is not S3 is not checked here (its writes are).
    """
    bucket, _, key = path.partition("/")
    if not is_s3(fs):
        return
    if not key.strip("/"):
        raise OutputPathError(f"{what}: a bucket cannot be an output; give a prefix inside it "
                              f"(e.g. s3://{bucket}/NAME)")
    try:
        fs.call_s3("head_bucket", Bucket=bucket)
    except FileNotFoundError:
        raise OutputPathError(f"{what}: bucket {bucket!r} does not exist (daskgmm never creates a bucket; "
                              "create it, or check the endpoint and region)") from None
    except PermissionError:
        pass  # HeadBucket may be denied where writing is allowed: the first write says
    except Exception as exc:
        raise_store_error(exc, what, lambda hint: OutputPathError(f"{what}: {hint}"))


def probe_write(fs, path: str, what: str) -> None:
    """Prove that objects can be written beside ``path``: write and delete a small probe object."""
    parent, base = posixpath.split(path.rstrip("/"))
    probe = posixpath.join(parent, f".{base}.probe-{uuid.uuid4().hex[:12]}")
    try:
        fs.pipe_file(probe, b"")
    except PermissionError as exc:
        raise OutputPathError(f"{what}: cannot write there ({exc})") from None
    except FileNotFoundError as exc:
        raise OutputPathError(f"{what}: cannot write there ({exc})") from None
    with contextlib.suppress(OSError):
        fs.rm_file(probe)


def check_file_target(fs, path: str, what: str) -> None:
    """A single-object output (a plot, a metrics file) on a store: its bucket exists, it is not a
    prefix holding objects, and its prefix can be written (a probe object, deleted at once)."""
    check_bucket(fs, path, what)
    fs.invalidate_cache(path)
    with contextlib.suppress(FileNotFoundError):
        if fs.isdir(path):
            raise OutputPathError(f"{what}: is a prefix holding objects; give a file name")
    probe_write(fs, path, what)


def put_object(fs, path: str, data: bytes) -> None:
    """Write one object in one request: a reader sees the old object or the new one, never a part."""
    fs.pipe_file(path, data)


# ---------------------------------------------------------------------------
# Listing, copying, removing


def list_objects(fs, path: str, **bound) -> list:
    """Every object under the prefix ``path`` (fresh: no cached listing); ``bound``: fsspec's ``timeout``."""
    fs.invalidate_cache(path)
    try:
        found = fs.find(path, **bound)
    except FileNotFoundError:
        return []
    prefix = path.rstrip("/") + "/"
    return sorted(f for f in found if f.startswith(prefix))


def remove_prefix(fs, path: str, seconds: float = 5.0, cleanup: bool = False) -> None:
    """Delete every object under ``path``; tasks that were cancelled may still add some for a moment.
    ``cleanup``: after a failure, each request bounded by :func:`daskgmm.io.files.cleanup_bound`."""
    deadline = time.monotonic() + seconds
    while True:
        objects = list_objects(fs, path, **(cleanup_bound(fs) if cleanup else {}))
        if objects:
            with contextlib.suppress(FileNotFoundError):
                fs.rm(objects, **(cleanup_bound(fs) if cleanup else {}))
        if not objects or time.monotonic() > deadline:
            return
        time.sleep(0.1)


def _exists(fs, path: str) -> bool:
    fs.invalidate_cache(path)
    return fs.exists(path)


def replace(fs, staging: str, target: str) -> bool:
    """Replace the objects of ``target`` by those of the complete ``staging`` prefix (see the module doc).

    Idempotent: a job killed anywhere in it is finished by running it again. Returns False
    (doing nothing) when ``staging`` is not complete (no ``_SUCCESS``): already committed.
    """
    marker, new_marker = posixpath.join(staging, SUCCESS), posixpath.join(target, SUCCESS)
    objects = list_objects(fs, staging)
    if marker not in objects:
        return False
    old = list_objects(fs, target)
    if new_marker in old:
        fs.rm_file(new_marker)  # first: from here on no reader trusts the target
    rest = [o for o in old if o != new_marker]
    if rest:
        fs.rm(rest)
    sources = [o for o in objects if o != marker]
    if sources:
        fs.copy(sources, [target + o[len(staging):] for o in sources])
    fs.pipe_file(new_marker, b"")
    fs.rm_file(marker)  # the staging is no longer complete: a roll forward will not copy it again
    if sources:
        fs.rm(sources)
    return True


# ---------------------------------------------------------------------------
# Journals


def journal_path(target: str, tag: str) -> str:
    parent, base = posixpath.split(target.rstrip("/"))
    return posixpath.join(parent, f".{base}.commit-{tag}")


def write_marker(fs, staging: str, journals: list) -> None:
    """Mark ``staging`` complete; its ``_SUCCESS`` names the journals of the commit it belongs to,
    so that a job tidying its target finds a journal written only beside the other target."""
    put_object(fs, posixpath.join(staging, SUCCESS), json.dumps({"journals": journals}).encode())


def _read_json(fs, path):
    try:
        return json.loads(fs.cat_file(path))
    except (OSError, ValueError):
        return None


def commit(fs, pairs: list, verify=(), committing=None) -> None:
    """Commit complete staging prefixes to their targets as one unit (see the module doc).

    Parameters
    ----------
    pairs : list of (staging, target)
        Protocol-stripped paths on ``fs``; every object of each staging is written.
    verify : iterable of callables
        Each raises if the job no longer holds one of its locks; called before the
        journal is written (after it, the commit finishes whatever happens).
    committing : callable, optional
        Called just before the first journal is written: from there on the stagings
        belong to the commit, and a job interrupted (SIGTERM) must not delete them
        (the next job rolls the commit forward, or back if no journal got written).
    """
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    journals = [journal_path(t, tag) for _, t in pairs]
    for staging, _ in pairs:
        write_marker(fs, staging, journals)
    for check in verify:
        check()
    doc = json.dumps([[s, t] for s, t in pairs]).encode()
    if committing is not None:
        committing()
    decided = False
    try:
        for j in journals:  # the first one written is the commit point
            put_object(fs, j, doc)
            decided = True
        for staging, target in pairs:
            replace(fs, staging, target)
    except BaseException as exc:
        if decided:  # a signal's stop (or a failure) from here on leaves the commit to the next job
            commit_under_way(exc, [url(fs, t) for _, t in pairs])
        raise
    for j in journals:
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(j)


def commit_under_way(exc: BaseException, targets: list) -> None:
    """Record on ``exc`` that it stopped a commit past its commit point: ``targets`` are then neither the old
    outputs nor the new ones until the next job writing one of them finishes the commit (what the command
    says on a SIGTERM there, rather than "no output written")."""
    exc.daskgmm_commit_under_way = list(targets)


def roll_forward(fs, journal: str, lock_target) -> None:
    """Finish the commit a killed job's ``journal`` describes.

    ``lock_target(target)`` is a context manager holding the lock of one target of the
    commit (re-entrant for the caller's own); every target is locked while the commit
    is finished, so that no other job writes one of them meanwhile.
    """
    pairs = _read_json(fs, journal)
    if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
        pairs = []  # unreadable: written by no job of ours (a put is whole or absent)
    tag = posixpath.basename(journal).rsplit(".commit-", 1)[-1]
    with contextlib.ExitStack() as locks:
        for _, target in pairs:
            locks.enter_context(lock_target(target))
        for staging, target in pairs:
            replace(fs, staging, target)
        for _, target in pairs:
            with contextlib.suppress(FileNotFoundError):
                fs.rm_file(journal_path(target, tag))
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(journal)


def tidy(fs, parent: str, base: str, lock_target) -> None:
    """Before writing ``parent/base``: finish the commits killed jobs left over it, delete their stagings.

    Called under the target's lock, so no live job writes a staging of it.
    """
    fs.invalidate_cache(parent)
    try:
        entries = [e.rstrip("/") for e in fs.ls(parent, detail=False)]
    except FileNotFoundError:
        entries = []
    names = {posixpath.basename(e): e for e in entries}
    journals = [e for n, e in names.items() if n.startswith(f".{base}.commit-")]
    stagings = [e for n, e in names.items() if n.startswith(f".{base}.staging-")]
    for staging in stagings:  # a staging of a joint commit whose journal is beside the other target only
        doc = _read_json(fs, posixpath.join(staging, SUCCESS))
        if isinstance(doc, dict):
            journals += [j for j in doc.get("journals", []) if isinstance(j, str) and j not in journals
                         and _exists(fs, j)]
    for journal in journals:
        roll_forward(fs, journal, lock_target)
    for staging in stagings:
        remove_prefix(fs, staging)


# ---------------------------------------------------------------------------
# The lock (S3)


@functools.cache
def conditional_writes_supported() -> bool:
    """Whether the installed botocore sends ``If-None-Match`` and ``If-Match`` on PutObject (s3fs
    silently drops the parameters an older one does not know)."""
    try:
        import botocore.session

        model = botocore.session.get_session().get_service_model("s3").operation_model("PutObject")
    except Exception:  # pragma: no cover - botocore is s3fs's dependency
        return False
    members = model.input_shape.members
    return "IfNoneMatch" in members and "IfMatch" in members


def _identity() -> dict:
    """Who holds a lock: host, pid, and the pid namespace (containers on one host share the name)."""
    ns = ""
    with contextlib.suppress(OSError):
        ns = str(os.stat("/proc/self/ns/pid").st_ino)
    return {"host": socket.gethostname(), "pid": str(os.getpid()), "pidns": ns}


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host (and pid namespace) is alive."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StoreLock:
    """The lock object of one output on S3 (see the module doc).

    Parameters
    ----------
    fs : s3fs.S3FileSystem
    path : str
        The lock object, protocol stripped (``bucket/prefix/.NAME.lock``).
    target : str
        The output it guards, for messages.
    """

    def __init__(self, fs, path: str, target: str):
        self.fs, self.path, self.target = fs, path, target
        self.bucket, self.key, _ = fs.split_path(path)
        self.token = uuid.uuid4().hex
        self.me = {**_identity(), "token": self.token}
        self.etag = None
        self.lost: str | None = None
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread = None

    # -- requests
    def _put(self, **condition):
        body = json.dumps({**self.me, "target": self.target,
                           "note": "daskgmm's lock of this output; a job holding it refreshes it"}).encode()
        r = self.fs.call_s3("put_object", Bucket=self.bucket, Key=self.key, Body=body,
                            Metadata={f"daskgmm-{k}": v for k, v in self.me.items()}, **condition)
        self.fs.invalidate_cache(self.path)
        return r["ETag"]

    def _head(self, **bound):
        """(owner metadata, ETag, seconds since it was last written by the store's clock), or None;
        ``bound``: fsspec's ``timeout``."""
        try:
            h = self.fs.call_s3("head_object", Bucket=self.bucket, Key=self.key, **bound)
        except FileNotFoundError:
            return None
        meta = {k.removeprefix("daskgmm-"): v for k, v in (h.get("Metadata") or {}).items()}
        now = h.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        try:
            now = email.utils.parsedate_to_datetime(now) if now else datetime.datetime.now(datetime.UTC)
        except (TypeError, ValueError):
            now = datetime.datetime.now(datetime.UTC)
        age = (now - h["LastModified"]).total_seconds()
        return meta, h["ETag"], age

    def _dead(self, meta, age) -> bool:
        if age > LEASE_SECONDS:
            return True
        mine = self.me
        if meta.get("host") == mine["host"] and meta.get("pidns", "") == mine["pidns"]:
            pid = meta.get("pid", "")
            return pid.isdigit() and not pid_alive(int(pid))
        return False

    # -- the protocol
    def acquire(self) -> StoreLock:
        if not conditional_writes_supported():
            raise RuntimeError(
                f"output {self.target}: the installed botocore cannot send S3 conditional writes "
                "(If-None-Match, If-Match), which the output lock needs; pip install 'daskgmm[s3]' "
                "to upgrade it")
        for _ in range(LOCK_ATTEMPTS):
            try:
                self.etag = self._put(IfNoneMatch="*")
                break
            except PermissionError as exc:
                raise OutputPathError(f"cannot write output {self.target}: {exc}") from None
            except FileNotFoundError as exc:
                raise OutputPathError(f"cannot write output {self.target}: {exc}") from None
            except OSError as exc:
                if _conflict(exc):
                    time.sleep(0.05 + 0.1 * (uuid.uuid4().int % 10) / 10)
                    continue
                if not _precondition_failed(exc):
                    raise
            held = self._head()
            if held is None:
                continue  # released meanwhile: try again
            meta, etag, age = held
            if not self._dead(meta, age):
                who = f"pid {meta.get('pid', '?')} on {meta.get('host', '?')}"
                raise OutputBusyError(
                    f"output {self.target} is being written by another job ({who}); wait for it to finish "
                    f"(its lock {url(self.fs, self.path)} was refreshed {max(age, 0):.0f} s ago, and is a killed "
                    f"job's once {LEASE_SECONDS:.0f} s pass without a refresh)")
            try:
                self.etag = self._put(IfMatch=etag)  # a killed job's lock: one taker wins
                break
            except PermissionError as exc:
                raise OutputPathError(f"cannot write output {self.target}: {exc}") from None
            except OSError as exc:  # another taker won, or the lock is gone: look again
                if not (_precondition_failed(exc) or _conflict(exc) or isinstance(exc, FileNotFoundError)):
                    raise
        else:
            raise OutputBusyError(f"output {self.target}: could not take its lock {url(self.fs, self.path)} "
                                f"in {LOCK_ATTEMPTS} attempts (other jobs keep taking it)")
        store_answered()  # a job that fails later cleans up as usual, whatever an earlier one found
        self._thread = threading.Thread(target=self._refresh_loop, name=f"daskgmm-lock {self.target}", daemon=True)
        self._thread.start()
        return self

    def _refresh_loop(self):
        last_ok = time.monotonic()
        while not self._stop.wait(REFRESH_SECONDS):
            with self._mutex:
                if self._stop.is_set():
                    return
                try:
                    self.etag = self._put(IfMatch=self.etag)
                    last_ok = time.monotonic()
                except Exception as exc:
                    if _precondition_failed(exc) or isinstance(exc, FileNotFoundError):
                        self.lost = "another job took it over"
                        return
                    if time.monotonic() - last_ok > LEASE_SECONDS:
                        self.lost = f"it could not be refreshed for {LEASE_SECONDS:.0f} s ({exc})"
                        return

    def verify(self) -> None:
        """Raise :class:`OutputBusyError` unless this job still holds the lock (read from the store)."""
        with self._mutex:
            if self.lost is None:
                held = self._head()
                if held is None:
                    self.lost = "its lock object was deleted"
                elif held[1] != self.etag or held[0].get("token") != self.token:
                    who = f"pid {held[0].get('pid', '?')} on {held[0].get('host', '?')}"
                    self.lost = f"another job took it over ({who})"
            if self.lost:
                raise OutputBusyError(f"output {self.target}: this job lost its lock: {self.lost}; nothing committed")

    def release(self) -> None:
        self._stop.set()
        left = cleanup_seconds(self.fs)  # a store known silent: the refresh may hold the mutex ~30 s
        if not self._mutex.acquire(timeout=-1 if left is None else max(left, 0)):
            self._leave()
            return
        try:
            if self.etag is None or self.lost:
                return
            try:
                with cleaning_up(self.fs, self._left()):
                    try:
                        self.fs.call_s3("delete_object", Bucket=self.bucket, Key=self.key, IfMatch=self.etag,
                                        **cleanup_bound(self.fs))
                    except FileNotFoundError:
                        pass
                    except OSError as exc:
                        if note_silent(exc) or _precondition_failed(exc):
                            raise
                        # a store without conditional deletes: check, then delete
                        held = self._head(**cleanup_bound(self.fs))
                        if held is not None and held[1] == self.etag:
                            self.fs.rm_file(self.path, **cleanup_bound(self.fs))
            except Exception:  # an unreachable store: the lock lapses (LEASE_SECONDS) or its pid is dead
                pass
            self.fs.invalidate_cache(self.path)
            self.etag = None
        finally:
            self._mutex.release()
        if self._thread is not None and self._thread is not threading.current_thread():
            left = cleanup_seconds(self.fs)
            self._thread.join(timeout=5 if left is None else min(5, max(left, 0)))

    def _left(self) -> str:
        """What a release that could not delete the lock leaves, for :func:`daskgmm.io.files.left_behind`."""
        return (f"{url(self.fs, self.path)} (the lock of output {self.target}: the next job takes it over, from this "
                f"host once this process has ended, from another after {LEASE_SECONDS:.0f} s without a refresh)")

    def _leave(self) -> None:
        """Record the lock as left on a silent store (its refresh holds the mutex with a request in flight)."""
        with cleaning_up(self.fs, self._left()):
            raise CleanupSkipped


__all__ = ["LEASE_SECONDS", "REFRESH_SECONDS", "OutputBusyError", "OutputPathError", "StoreLock", "check_bucket",
           "check_file_target", "commit", "is_s3", "list_objects", "put_object", "remove_prefix", "replace",
           "roll_forward", "tidy", "write_marker"]
