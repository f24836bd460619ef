"""Parquet inputs on the client: listing files, reading footers, checking schemas, planning chunks.

Nothing here reads data: the schema of every file is checked from its Parquet footer,
then consecutive small row groups of a file are merged and large ones cut into row
slices (:class:`Piece`), so that one task's working set stays within a byte budget.
:mod:`daskgmm.io.read` reads the pieces on the workers; :mod:`daskgmm.io.parquet` is the front.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import os
import posixpath
import time
import typing
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from daskgmm.io.vectors import SPARK_VECTORS, element, is_vector, stored_column
from daskgmm.validation.scan import DataError

#: Rows per chunk when no memory budget is known (no cluster, no ``chunk_rows``).
DEFAULT_CHUNK_ROWS = 131072

_PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")


class NonFiniteError(DataError):
    """A chunk holds NaN, null or infinite feature values (``nan_policy="raise"``)."""


class DataWarning(UserWarning):
    """Data a fit can use but probably should not as they are (e.g. boolean features)."""


class RowsOmittedWarning(UserWarning):
    """Rows with NaN or infinite values were dropped (``nan_policy="omit"``)."""


class InputChangedError(DataError):
    """An input file changed (size, modification time or rows) after the job planned its reads."""


class EndpointUnreachableError(ConnectionError):
    """The object store's endpoint cannot be reached: nothing listens there, its name does not
    resolve, or the connection times out (exit status 1: the environment, as a closed scheduler
    port or a store that stops answering, not the input)."""


# ---------------------------------------------------------------------------
# Finding files


def get_fs(path, storage_options=None):
    import fsspec

    # url_to_fs, not get_fs_token_paths: that one lists a glob's matches too (a listing the caller
    # makes again, and whose errors would come out here, unnamed)
    fs, _ = fsspec.core.url_to_fs(path, **_bounded_s3(path, storage_options))
    bound_s3(fs)  # also an instance from fsspec's cache whose client was made before
    return fs


#: botocore's attempts of a request (its standard retry mode: throttling and 503s taken again with
#: its backoff). s3fs tries each botocore call :data:`S3_TRIES` times, and a ranged read (every read of
#: a Parquet file's bytes) that many times again: s3fs's own defaults, 5 tries of calls of 5 attempts of
#: 15 s, and 5 of those for a read, held a request to a store that accepts connections but stops answering
#: ~7 min, a read ~30 min (a nightly job seen as hung). Here 3 attempts of 5 s without a byte: a request
#: fails after 2 x 3 x 5 s (~30 s), a read after 2 x 2 x 3 x 5 s (~60 s). An operator's own
#: ``config_kwargs`` ``retries`` / ``read_timeout`` (or ``AWS_MAX_ATTEMPTS``) win.
S3_MAX_ATTEMPTS = 3
#: s3fs's tries of a botocore call (its ``retries``, a class attribute of 5, which a pickled filesystem does
#: not carry to the workers: :func:`bound_s3_tries` sets it on the instance in each process). Its ranged reads
#: wrap the call, tried so, in as many tries again: the bound of a read is its square (25 tries of botocore's
#: 2 attempts of 5 s before, ~4.5 min, which fits user-trial-ops-r18's 281 s for a store gone silent during
#: reads; and a test of it was flaky: it waited 5 tries or 25, by whether the silence met a file's metadata
#: or its bytes).
S3_TRIES = 2
#: Seconds without a byte before botocore gives an attempt up (its default is 60).
S3_READ_TIMEOUT = 5


def s3_option_names() -> set:
    """The storage options an ``s3://`` filesystem takes: ``s3fs.S3FileSystem``'s parameters, those it hands
    to fsspec, and those of the botocore session it passes every other one to (which refuses an unknown one
    only at the first request, as a bare TypeError: user-trial-ops-r18's ``endpoint`` for ``endpoint_url``)."""
    import inspect

    import s3fs
    from aiobotocore.session import AioSession

    names = set(inspect.signature(s3fs.S3FileSystem.__init__).parameters)
    names |= set(inspect.signature(AioSession.__init__).parameters)
    names |= {"use_listings_cache", "listings_expiry_time", "max_paths", "skip_instance_cache"}
    return names - {"self", "kwargs"}


def _bounded_s3(path, storage_options) -> dict:
    options = dict(storage_options or {})
    if protocol_of(path) not in ("s3", "s3a"):
        return options
    # a copy to its depth: botocore writes into its ``retries`` (a "mode"), which changed the caller's options and so
    # fsspec's token of them (the next call with the same options made another filesystem)
    config = copy.deepcopy(options.get("config_kwargs") or {})
    config.setdefault("read_timeout", S3_READ_TIMEOUT)
    if not os.environ.get("AWS_MAX_ATTEMPTS"):
        config.setdefault("retries", {"total_max_attempts": S3_MAX_ATTEMPTS, "mode": "standard"})
    options["config_kwargs"] = config
    return options


_writes_bounded = False


def _drop_expect_continue(request, **kwargs):
    del request.headers["Expect"]  # no error when absent; botocore never signs this header


def bound_s3_tries(fs) -> None:
    """At most :data:`S3_TRIES` of s3fs's tries per request on ``fs`` (an S3 filesystem; nothing for others),
    in this process: every process that uses a filesystem (the command, each worker) sets it before its first
    request. A lower class setting (``s3fs.S3FileSystem.retries``) wins."""
    if "s3" in _protocols(fs) and isinstance(getattr(fs, "retries", None), int):
        fs.retries = min(fs.retries, S3_TRIES)


def bound_s3(fs) -> None:
    """Both bounds of daskgmm's S3 requests on ``fs``, in this process: writes that a silent store fails
    (:func:`bound_s3_writes`) and s3fs's tries (:func:`bound_s3_tries`). For a worker, before its first request."""
    bound_s3_writes(fs)
    bound_s3_tries(fs)


def bound_s3_writes(fs=None) -> None:
    """Send this process's S3 writes without ``Expect: 100-continue``, so that ``read_timeout`` bounds them.

    botocore asks S3 to accept every PutObject and UploadPart before it sends the body, and
    aiohttp arms its read timeout only once the body is sent: a store that goes silent held such
    a request for ever (user-trial-r12: a stopped S3 server held the fit's checkpoint write and
    its locks' refresh past ten minutes, while reads failed in a bounded time). Without the header the body
    goes at once, and a store that does not answer fails the write as it fails a read. Every
    botocore session made in this process from now on drops it for S3 (an S3 client's requests
    only); ``fs``'s client, when it has one already, too. Idempotent.
    """
    global _writes_bounded
    if fs is not None and "s3" not in _protocols(fs):
        return
    if not _writes_bounded:
        import botocore.handlers

        botocore.handlers.BUILTIN_HANDLERS.append(("before-sign.s3", _drop_expect_continue))
        _writes_bounded = True
    client = getattr(fs, "_s3", None)
    if client is not None:
        client.meta.events.register("before-sign.s3", _drop_expect_continue, unique_id="daskgmm-no-100-continue")


def no_credentials(exc) -> bool:
    """Whether ``exc`` is botocore's "no credentials" (found none, or part of them, or a profile named that no
    file holds), which s3fs passes on as it is where it turns a refused request into a PermissionError. By name: a
    process reading local files never imports botocore."""
    return type(exc).__module__.startswith("botocore") and type(exc).__name__ in (
        "NoCredentialsError", "PartialCredentialsError", "ProfileNotFound")


def unreachable(exc) -> bool:
    """Whether ``exc`` is botocore's failure to connect to an endpoint (refused, unresolvable, a
    connect timeout), which s3fs passes on as it is. By name, as :func:`no_credentials`."""
    return type(exc).__module__.startswith("botocore") and any(
        c.__name__ == "EndpointConnectionError" for c in type(exc).__mro__)


def store_silent(exc) -> bool:
    """Whether ``exc`` is botocore's read timeout: a store that took the request and did not answer within
    the storage options' ``read_timeout`` (on every try). By name, as :func:`unreachable`."""
    return type(exc).__module__.startswith("botocore") and any(
        c.__name__ == "ReadTimeoutError" for c in type(exc).__mro__)


def silent_store_message(exc) -> str:
    """What the command says of :func:`store_silent` ``exc`` (botocore's words name the URL)."""
    return (f"{exc}: the object store stopped answering (no reply within the read timeout of the storage "
            "options, on every try); run the job again once it answers (with --checkpoint-dir and --resume it "
            "goes on from its last checkpoint)")


#: Once an S3 store is known silent (a request failed on every try, ~30 s), what a failed job still does on
#: it to clean up (delete its staging objects and its locks, write --metrics-out) shares one deadline: this
#: many read timeouts of the storage options (10 s by default) from the moment the silence was seen. A step
#: that does not fit is left, and named (:func:`left_behind`): every step waiting its own bound (~55 s then) made
#: such a failure take 180-230 s (user-trial-r12), where about a minute was promised.
SILENT_CLEANUP_TIMEOUTS = 2
#: How long a silence is remembered (longer than the deadline): a later job of a long-lived process cleans up as
#: usual after it, or once the store answered it (:func:`store_answered`); a command forgets it as it ends.
SILENT_MEMORY_SECONDS = 300.0

_silence: dict = {}  # "seen": monotonic time the silence was first seen; "left": what clean-up left on the store


class CleanupSkipped(TimeoutError):
    """A clean-up step on an S3 store known silent, for which its deadline left no time (never leaves
    :func:`cleaning_up`)."""


def note_silent(exc) -> bool:
    """Whether ``exc``, or an exception it was raised from or while handling, is :func:`store_silent`; if so
    the silence is remembered from now (unless it already is): the clean-up deadline starts."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if store_silent(exc):
            if silence_seen() is None:
                _silence["seen"] = time.monotonic()
            return True
        exc = exc.__cause__ or exc.__context__  # a message that names the output was raised from it
    return False


def silence_seen() -> float | None:
    """When (``time.monotonic``) this process last saw an S3 store go silent, or None (never, or more than
    :data:`SILENT_MEMORY_SECONDS` ago)."""
    seen = _silence.get("seen")
    if seen is not None and time.monotonic() - seen > SILENT_MEMORY_SECONDS:
        store_answered()  # long enough ago: whatever the store does now, it is a new failure's
        return None
    return seen


def forget_silence() -> None:
    """Forget a silence seen and what its clean-up left (a command starts or ends)."""
    _silence.clear()


def store_answered() -> None:
    """An S3 store answered this process (it took a lock): a silence seen before is over, its clean-up
    deadline gone (what clean-up left stays to be said: :func:`left_behind`)."""
    _silence.pop("seen", None)


def cleanup_seconds(fs) -> float | None:
    """How long a clean-up request on ``fs`` may still take: None (its own bound) when ``fs`` is not S3 or no
    silence was seen, else what is left of the deadline (:data:`SILENT_CLEANUP_TIMEOUTS`; 0 or less: none)."""
    seen = silence_seen()
    if seen is None or "s3" not in _protocols(fs):
        return None
    read_timeout = float((getattr(fs, "config_kwargs", None) or {}).get("read_timeout") or S3_READ_TIMEOUT)
    return seen + SILENT_CLEANUP_TIMEOUTS * read_timeout - time.monotonic()


def cleanup_bound(fs) -> dict:
    """The keywords bounding one clean-up request of ``fs``'s (fsspec's ``timeout``): none but when a
    silence was seen (:func:`cleanup_seconds`); :class:`CleanupSkipped` when the deadline has passed."""
    left = cleanup_seconds(fs)
    if left is None:
        return {}
    if left <= 0:  # fsspec takes a timeout of 0 as none
        raise CleanupSkipped
    return {"timeout": left}


@contextlib.contextmanager
def cleaning_up(fs, what: str):
    """Around one clean-up step on ``fs`` whose requests are bounded by :func:`cleanup_bound`: when the store
    is silent (the step's time ran out, or a request found it silent: the deadline starts then) or cannot be
    reached (:func:`unreachable`: an endpoint gone, which may come back with what was left), the step ends and
    ``what``, naming what it leaves on the store and who removes it, is kept for :func:`left_behind`. Other
    errors pass."""
    import asyncio

    try:
        yield
    except Exception as exc:
        if not (isinstance(exc, asyncio.TimeoutError) and silence_seen() is not None) and not note_silent(exc) \
                and not unreachable(exc):
            raise
        _silence.setdefault("left", []).append(what)


def left_behind() -> list:
    """What clean-up left on a silent store (:func:`cleaning_up`), in order; the list empties."""
    left = list(_silence.get("left", []))
    _silence.get("left", []).clear()
    return left


def unreachable_error(exc, where: str) -> EndpointUnreachableError:
    """The error of :func:`unreachable` ``exc``, naming the endpoint (scheme, host and port of the
    request botocore could not send) and ``where`` (the path, or the output, that needed it)."""
    from urllib.parse import urlsplit

    url = str((getattr(exc, "kwargs", None) or {}).get("endpoint_url") or "")
    parts = urlsplit(url)
    endpoint = f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else url or "?"
    reason, cause = "cannot connect", exc.__context__
    while cause is not None:  # aiohttp's error, then the socket's: the innermost says why
        if isinstance(cause, ConnectionRefusedError):
            reason = "connection refused"
        elif isinstance(cause, TimeoutError):
            reason = "connection timed out"
        elif isinstance(cause, OSError) and cause.strerror and not isinstance(cause, ConnectionError):
            reason = cause.strerror  # e.g. a name that does not resolve
        cause = cause.__context__
    return EndpointUnreachableError(
        f"{where}: cannot connect to the S3 endpoint {endpoint} ({reason}); check that the store runs "
        "there, and the endpoint_url of the storage options (--storage-options, or storage_options "
        "in the config)")


def this_worker() -> str:
    """"worker ADDRESS" when this runs in a Dask worker, else "" (a message names the worker whose
    credentials or endpoint a store refused: on a cluster of other hosts, not the command's)."""
    try:
        from distributed import get_worker

        return f"worker {get_worker().address}"
    except Exception:  # not in a worker (Dask's threaded scheduler, or the command's own process)
        return ""


def worker_credentials(verb: str) -> str:
    """Why a store refuses a worker what it let the command do (``verb``: "reads", "writes"): the command
    checked with its own host's credentials, the workers use theirs."""
    return (f"a worker {verb} with its own host's credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE, ~/.aws, a role) or those of the storage options, not the ones of the host that runs "
            "the command: check them where the workers run")


def credentials_hint(exc) -> str:
    if type(exc).__name__ == "ProfileNotFound":  # AWS_PROFILE, or the storage options' profile
        return (f"{exc}: name a profile that ~/.aws/config or ~/.aws/credentials holds (AWS_PROFILE, or "
                "'profile' in --storage-options), or leave it out")
    return (f"{exc}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or give the "
            "credentials in --storage-options")


def raise_store_error(exc, where: str, refused) -> typing.NoReturn:
    """Raise what the failure ``exc`` of a call to a store (being handled) means: an endpoint not reached
    (:func:`unreachable_error`, naming ``where``), no credentials (the caller's error, ``refused(hint)``,
    around :func:`credentials_hint`), else ``exc`` itself."""
    if unreachable(exc):
        raise unreachable_error(exc, where) from None
    if not no_credentials(exc):
        raise exc
    raise refused(credentials_hint(exc)) from None


def strip_protocol(fs, path: str) -> str:
    return fs._strip_protocol(path)


def is_local(fs) -> bool:
    """Whether ``fs`` is the local filesystem (atomic renames, directories); else an object store or the like."""
    return "file" in _protocols(fs)


def _protocols(fs) -> tuple:
    """``fs.protocol`` as a tuple (fsspec gives a string or a tuple of names)."""
    return tuple(fs.protocol) if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)


def protocol_of(path) -> str:
    """The fsspec protocol of a path or URL ("file" for a local path)."""
    import fsspec

    protocol, _ = fsspec.core.split_protocol(str(path))
    return "file" if protocol in (None, "file", "local") else protocol


def place_of(path) -> tuple[str, str]:
    """Where a path or URL points, for comparing paths: its protocol and a normalised absolute path."""
    import fsspec

    protocol = protocol_of(path)
    _, rest = fsspec.core.split_protocol(str(path))
    if protocol == "file":
        return protocol, os.path.abspath(os.path.expanduser(rest))
    return protocol, "/" + rest.strip("/")


def holds(a: tuple[str, str], b: tuple[str, str]) -> bool:
    """Whether place ``a`` is place ``b`` or a directory above it."""
    return a[0] == b[0] and (a[1] == b[1] or b[1].startswith(a[1].rstrip("/") + "/"))


def glob_place(path) -> tuple[tuple[str, str], str] | None:
    """For a glob, the place of the directory it reads below and its pattern as a place's path
    (``fnmatch`` against ``place_of(...)[1]``: ``*`` crosses ``/``, so it matches what is inside the
    directories it matches too); None for a path without ``*?[``."""
    path = str(path)
    glob_at = min((path.find(ch) for ch in "*?[" if ch in path), default=-1)
    if glob_at < 0:
        return None
    root = path[:glob_at].rsplit("/", 1)[0] if "/" in path[:glob_at] else "."
    pattern = place_of(root)[1].rstrip("/") + "/" + path[len(root) + 1:] if root != "." else place_of(path)[1]
    return place_of(root), pattern


def matches_glob(place: tuple[str, str], path) -> bool:
    """Whether ``place`` is, or is inside, something the glob ``path`` matches."""
    import fnmatch

    g = glob_place(path)
    return g is not None and place[0] == g[0][0] and fnmatch.fnmatchcase(place[1], g[1])


#: What the Dask arrays of :func:`daskgmm.io.parquet.open_parquet` and ``open_sparse_parquet`` read, by the
#: tag in their layers' names: (the paths as given, the files), so that an output written from such an
#: array is never written over it (see :func:`output_over_inputs`).
_READS: dict[str, tuple[list[str], list[str]]] = {}


def register_reads(tag: str, given, files) -> None:
    """Record that the layers named ``daskgmm-...-{tag}`` read ``files`` (found from ``given``)."""
    given = [os.fspath(p) for p in (given if isinstance(given, (list, tuple)) else [given])]
    _READS[tag] = (given, list(files))


def reads_of(collection) -> tuple[list[str], list[str]]:
    """The paths given and the files read by the daskgmm Parquet reads in a Dask collection's graph
    (its layers, or, persisted, its keys), or empty lists."""
    graph = collection.__dask_graph__() if hasattr(collection, "__dask_graph__") else None
    if graph is None:
        return [], []
    names = set(getattr(graph, "layers", {}) or {})
    names.update(k[0] if isinstance(k, tuple) else k for k in graph.keys())
    given, files = [], []
    for name in names:
        if isinstance(name, str) and name.startswith("daskgmm-"):
            hit = _READS.get(name.rsplit("-", 1)[-1])
            if hit:
                given += hit[0]
                files += hit[1]
    return given, files


def output_over_inputs(target, collection) -> str | None:
    """Why writing output directory ``target`` from ``collection`` would destroy or mix with what the
    collection reads (a Parquet input of daskgmm's), or None: the output is one of its files or a
    directory above one (committing it replaces it whole), or lies inside a directory it reads."""
    given, files = reads_of(collection)
    out = place_of(target)
    for f in files:
        where = place_of(f)
        if holds(out, where):
            return f"the output {target} {'is' if out == where else 'holds'} the input file {f}"
    for g in given:
        if matches_glob(out, g):
            return f"the output {target} matches the input glob {g} (the next read would take it as data)"
        if not any(ch in g for ch in "*?[") and g not in files and holds(place_of(g), out):
            return f"the output {target} is inside the input directory {g}"
    return None


def list_files(path, storage_options=None):
    """Expand a path, glob, directory or list of them into sorted Parquet files.

    Returns
    -------
    fs : fsspec.AbstractFileSystem
    files : list of str
    """
    paths = list(path) if isinstance(path, (list, tuple)) else [path]
    if not paths:
        raise DataError("no input path given")
    paths = [os.fspath(p) for p in paths]
    fs = get_fs(paths[0], storage_options)
    if not is_local(fs):
        # listed afresh: s3fs keeps the listings of a process's earlier reads (instances are cached), with each
        # object's ETag, and refuses to read an object rewritten since ("FileExpired"); invalidating a prefix
        # forgets it and its parents, not the partition prefixes below it, so all of them
        fs.invalidate_cache()
    files: list[str] = []
    for p in paths:
        try:
            files.extend(_files_at(fs, p))
        except PermissionError as exc:  # an object store refusing the listing: the credentials or a policy
            raise DataError(f"{p!r}: cannot list or read it ({exc})") from None
        except Exception as exc:
            raise_store_error(exc, p, lambda hint, p=p: DataError(f"{p!r}: cannot list or read it ({hint})"))
    seen = set()
    unique = [f for f in files if not (f in seen or seen.add(f))]
    if not is_local(fs):  # named as the user names them (s3://bucket/key) in messages, ids and checkpoints
        unique = [fs.unstrip_protocol(f) for f in unique]
    return fs, unique


def _parquet_below(fs, directory: str) -> list[str]:
    """The Parquet files below a directory, skipping names that start with ``_`` or ``.`` (Spark's
    ``_SUCCESS`` and ``_temporary/``, checksum files) at any level."""
    return sorted(
        f for f in fs.find(directory)
        if f.endswith(_PARQUET_SUFFIXES)
        and not any(part.startswith(("_", ".")) for part in posixpath.relpath(f, directory).split("/"))
    )


def _hidden_match(pattern: str, match: str) -> bool:
    """Whether a wildcard of a glob matched a name starting with ``_`` or ``.`` (Spark's ``_SUCCESS``,
    ``_started_*``, ``.crc`` files, ``_temporary/``), which the glob does not name itself: Hadoop's globs
    skip them, as a directory's listing here does (fsspec's match them)."""
    pp, mp = pattern.rstrip("/").split("/"), match.rstrip("/").split("/")
    if "**" in pattern or len(pp) != len(mp):  # components not aligned: judge the last one
        pp, mp = pp[-1:], mp[-1:]
    return any(m.startswith(("_", ".")) and any(ch in p for ch in "*?[") and not p.startswith(m[0])
               for p, m in zip(pp, mp))


def _other_files(fs, directory: str, given: str) -> str:
    """Words for a directory without Parquet files' names but with other files (not ``_`` or ``.`` ones):
    a Hive-format table's are Parquet without a suffix (``part-00000-…-c000``, ``000000_0``)."""
    other = sorted(f for f in fs.find(directory)
                   if not any(c.startswith(("_", ".")) for c in posixpath.relpath(f, directory).split("/")))
    if not other:
        return ""
    first = posixpath.relpath(other[0], directory)
    glob = posixpath.join(str(given).rstrip("/"), *["*"] * len(first.split("/")))  # skips _ and . names
    return (f" but {len(other)} other file(s), such as {first}: if they are Parquet, name them with a glob, "
            f"e.g. {glob!r}")


def _files_at(fs, p: str) -> list[str]:
    """The Parquet files one input path names: a file, a directory (every Parquet file below it) or a glob."""
    files: list[str] = []
    sp = strip_protocol(fs, p)
    if any(ch in sp for ch in "*?["):
        # a file the glob matches is read as named; a directory (events/date=*) as a directory is
        found = []
        for m in sorted(fs.glob(sp)):
            if _hidden_match(sp, m):
                continue
            found.extend([m] if fs.isfile(m) else _parquet_below(fs, m) if fs.isdir(m) else [])
        if not found:
            raise DataError(f"no Parquet files match {p!r}")
        files.extend(found)
    elif fs.isdir(sp):
        found = _parquet_below(fs, sp)
        if not found:
            raise DataError(f"directory {p!r} holds no Parquet files (*.parquet, *.parq, *.pq)"
                            f"{_other_files(fs, sp, p)}")
        files.extend(found)
    elif fs.isfile(sp):
        files.append(sp)
    else:
        raise DataError(f"no such file or directory: {p!r}")
    return files


# ---------------------------------------------------------------------------
# Footers and schemas


@dataclass(frozen=True)
class FileInfo:
    path: str
    schema: object  # pyarrow.Schema
    row_groups: tuple  # rows per row group
    col_bytes: tuple = ()  # per row group: {column: uncompressed bytes} (decoded size from the footer)
    signature: tuple = ()  # (size, mtime) when planned
    partitions: tuple = ()  # ((key, value or None), ...): the key=value directories of its path, outermost first


#: The value Hive and Spark write for a null partition key (``partitionBy`` on a column with nulls).
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


def partitions_of(path) -> tuple:
    """The Hive partition keys in a file's path: ``((key, value), ...)`` for each directory named
    ``key=value`` (``events/day=2026-12-01/country=FR/part-0.parquet``: day and country), values
    percent-decoded as Spark and pyarrow encode them, :data:`HIVE_NULL` as None."""
    from urllib.parse import unquote

    out = []
    for part in str(path).split("/")[:-1]:
        key, eq, value = part.partition("=")
        if eq and key and not key.startswith(("_", ".")):
            value = unquote(value)
            out.append((unquote(key), None if value == HIVE_NULL else value))
    return tuple(out)


def _partition_value(info: FileInfo, key: str):
    """The raw value of partition key ``key`` in ``info``'s path; KeyError when its path has none.
    A key that its path gives twice with different values is an error (Spark refuses it too)."""
    values = {v for k, v in info.partitions if k == key}
    if not values:
        raise KeyError(key)
    if len(values) > 1:
        raise DataError(f"{info.path}: partition key {key!r} appears more than once in the path, with values "
                        f"{', '.join(sorted(map(repr, values)))}")
    return values.pop()


def _number(text):
    """``text`` as an int or a float, else None (a partition value as Spark infers its type; Python's
    own parsers would also take ``1_000`` and surrounding spaces, which Spark reads as text)."""
    import re

    if re.fullmatch(r"[+-]?[0-9]+", text):
        return int(text)
    if re.fullmatch(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", text):
        return float(text)
    return None


def partition_column(infos: list[FileInfo], key: str, feature: bool):
    """The Arrow type of partition key ``key`` read as a column, over the files whose paths give it
    and that do not hold a column of that name (the file's own column wins): int64 when every value
    is an integer (string for an id beyond int64), float64 when every value is a number, else string
    (nulls of any). A feature's values must be numbers: a DataError names the first other value and
    its file."""
    import pyarrow as pa

    values = []
    for info in infos:
        if key in info.schema.names:
            continue
        try:
            values.append((_partition_value(info, key), info))
        except KeyError:
            continue
    parsed = [(_number(v) if v is not None else None, v, info) for v, info in values]
    words = next(((v, info) for n, v, info in parsed if v is not None and n is None), None)
    if words is not None:
        if feature:
            v, info = words
            raise DataError(
                f"{info.path}: column {key!r} is a partition key in the path ({key}={v}), and its value {v!r} is "
                "not a number; feature columns must be numeric: leave it out of columns=[...] (--columns), or "
                "carry it to the predictions as id_column (--id-column)")
        return pa.string()
    numbers = [n for n, _, _ in parsed if n is not None]
    if all(isinstance(n, int) for n in numbers):
        if all(-(2**63) <= n < 2**63 for n in numbers):
            return pa.int64()
        if not feature:
            return pa.string()  # ids beyond int64: their digits kept, as text (float64 would round them)
    return pa.float64()


def partition_types(infos: list[FileInfo], columns, id_column) -> dict:
    """``{column: Arrow type}`` of the wanted columns (``columns`` and the id column(s) ``id_column``) that
    some file's path gives as a partition key and its file does not hold (:func:`partition_column`)."""
    keys = {k for i in infos for k, _ in i.partitions}
    wanted = [c for c in list(columns) + id_columns(id_column) if c in keys]
    return {c: partition_column(infos, c, c in columns) for c in wanted
            if any(any(k == c for k, _ in i.partitions) and c not in i.schema.names for i in infos)}


def partition_constants(info: FileInfo, names, types: dict) -> tuple:
    """``((column, value), ...)`` for the columns of ``names`` that ``info``'s path gives as partition
    keys and its file does not hold, each value in its column's type (``types``; None for null)."""
    import pyarrow as pa

    out = []
    for c in names:
        if c not in types or c in info.schema.names:  # schema.names makes a list: asked only for keys
            continue
        try:
            v = _partition_value(info, c)
        except KeyError:
            continue
        if v is not None and not pa.types.is_string(types[c]):
            v = int(v) if pa.types.is_integer(types[c]) else float(v)
        out.append((c, v))
    return tuple(out)


def file_signature(fs, path) -> tuple:
    """(size in bytes, modification time as text or None) of a file."""
    info = fs.info(path)
    mtime = info.get("mtime", info.get("LastModified", info.get("updated")))
    return int(info.get("size") or 0), None if mtime is None else str(mtime)


def _text_hint(path) -> str:
    """How to convert a text table (the notes' Old Faithful is a CSV file) that was given as DATA."""
    name = str(path).lower()
    sep = {".csv": "", ".tsv": ", sep='\\t'", ".txt": ", sep=None"}
    suffix = next((s for s in sep if name.endswith(s)), None)
    if suffix is None:
        return ""
    return (f"; daskgmm reads Parquet only: convert the table first, e.g. in Python "
            f"pandas.read_csv({str(path)!r}{sep[suffix]}).to_parquet('data.parquet', index=False)")


def inspect_file(fs, path) -> FileInfo:
    import pyarrow.parquet as pq

    try:
        sig = file_signature(fs, path)
        with fs.open(path, "rb") as f:
            md = pq.ParquetFile(f).metadata
            schema = md.schema.to_arrow_schema()
            rgs = tuple(md.row_group(i).num_rows for i in range(md.num_row_groups))
            col_bytes = []
            for i in range(md.num_row_groups):
                rg = md.row_group(i)
                sizes: dict = {}
                for j in range(rg.num_columns):
                    c = rg.column(j)
                    name = c.path_in_schema.split(".")[0]
                    sizes[name] = sizes.get(name, 0) + int(c.total_uncompressed_size or 0)
                col_bytes.append(sizes)
    except Exception as exc:  # any reader failure means an unreadable file
        why = f"{type(exc).__name__}: {exc}"
        raise DataError(f"{path}: not a readable Parquet file ({why}){_text_hint(path)}") from None
    return FileInfo(path, schema, rgs, tuple(col_bytes), sig, partitions_of(path))


def _is_numeric(t) -> bool:
    """A type read as numbers: integers, floats, booleans, decimals, and ``null`` (a column of nulls
    only, as pandas writes an all-None or empty object column; read as NaN, i.e. missing values)."""
    import pyarrow as pa

    return (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t)
            or pa.types.is_null(t))


def _is_feature(t) -> bool:
    """A type read as feature values: a numeric one, or Spark ML's vector (:mod:`daskgmm.io.vectors`)."""
    return _is_numeric(t) or is_vector(t)


def _not_vector(t) -> str:
    """Words for a struct that looks like Spark ML's vector but is not (another struct is just not numeric)."""
    import pyarrow as pa

    if pa.types.is_struct(t) and {t.field(i).name for i in range(t.num_fields)} >= {"values"}:
        return f" or {SPARK_VECTORS} or arrays of numbers"
    return ""


def index_columns(schema) -> set:
    """The columns in which pandas or Dask stored a DataFrame's index (named in the file's pandas
    metadata: ``__index_level_0__``, ``__null_dask_index__`` or the index's name); their readers
    turn them back into the index, so they are not data."""
    try:
        meta = schema.pandas_metadata or {}
    except Exception:  # metadata that is not pandas' JSON: no index columns
        return set()
    return {c for c in meta.get("index_columns", ()) if isinstance(c, str)}


def data_columns(schema) -> list:
    """A file's columns but the index pandas or Dask stored (``index_columns``)."""
    index = index_columns(schema)
    return [c for c in schema.names if c not in index]


def id_columns(id_column) -> list:
    """The names of ``id_column`` as a list: None (or an empty list) gives none, a name one, a list or tuple of
    names those, in order. A name given twice, or one that is not a string, is a DataError naming it."""
    if id_column is None:
        return []
    if isinstance(id_column, str):
        return [id_column]
    if not isinstance(id_column, (list, tuple)):
        raise DataError(f"id_column must be a column name or a list of them, got {id_column!r}")
    names = list(id_column)
    odd = [c for c in names if not isinstance(c, str)]
    if odd:
        raise DataError(f"id_column: {odd[0]!r} is not a column name (a string)")
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise DataError(f"id_column lists {', '.join(map(repr, dup))} more than once")
    return names


def check_schemas(infos: list[FileInfo], columns, id_column):
    """Feature columns after checking every file's schema; raises DataError naming file and column.

    ``id_column``: a name or a list of names (:func:`id_columns`). Without ``columns``, every column but the
    id columns and a stored pandas index."""
    import pyarrow as pa

    ids = id_columns(id_column)
    wanted = None if columns is None else {columns} if isinstance(columns, str) else set(columns)
    for info in infos:
        # pyarrow writes a schema with a name twice; reading it by name failed (KeyError, exit 1)
        names = info.schema.names
        dup = sorted({c for c in names if names.count(c) > 1 and (wanted is None or c in wanted or c in ids)})
        if dup:
            raise DataError(f"{info.path}: column(s) {', '.join(map(repr, dup))} appear more than once in its "
                            "schema; column names must be unique")
    first = infos[0]
    names = data_columns(first.schema)
    if columns is None:
        # every file must have the same columns, whichever file comes first: name the odd one
        sets = {}
        for info in infos:
            sets.setdefault(frozenset(data_columns(info.schema)), []).append(info)
        if len(sets) > 1:
            common = max(sets.values(), key=len)
            base = set(data_columns(common[0].schema))
            odd = next(i for group in sets.values() if group is not common for i in group)
            odd_names = set(data_columns(odd.schema))
            extra, missing = sorted(odd_names - base), sorted(base - odd_names)
            what = "; ".join(filter(None, [extra and f"extra column(s) {', '.join(map(repr, extra))}",
                                           missing and f"missing column(s) {', '.join(map(repr, missing))}"]))
            raise DataError(
                f"{odd.path}: its columns differ from the other files' ({what}; {len(common)} file(s) such as "
                f"{common[0].path} have: {', '.join(sorted(base))}); choose the feature columns with "
                "columns=[...] (--columns a,b,...)"
            )
        columns = [c for c in names if c not in ids]
        # the types of a file with rows (an empty frame's columns are written as null)
        first = next((i for i in infos if sum(i.row_groups)), first)
        flags = [c for c in columns if pa.types.is_boolean(first.schema.field(c).type)]
        if flags:
            warnings.warn(
                f"boolean column(s) {', '.join(map(repr, flags))} are used as 0/1 features; name the feature "
                "columns with columns=[...] (--columns a,b,...) to leave them out",
                DataWarning, stacklevel=3,
            )
        bad = [c for c in columns if not _is_feature(first.schema.field(c).type)]
        if bad:
            listed = ", ".join(f"{c!r} ({first.schema.field(c).type})" for c in bad)
            vector = next(filter(None, (_not_vector(first.schema.field(c).type) for c in bad)), "")
            raise DataError(
                f"{first.path}: column(s) {listed} are not numeric{vector}; choose the numeric feature "
                "columns with columns=[...] (--columns a,b,...)"
            )
    else:
        columns = [columns] if isinstance(columns, str) else list(columns)
        if not columns:
            raise DataError("columns is empty; name at least one feature column")
        dup = sorted({c for c in columns if columns.count(c) > 1})
        if dup:
            raise DataError(f"columns lists {', '.join(map(repr, dup))} more than once")
        both = [c for c in ids if c in columns]
        if both:
            raise DataError(f"the id column {both[0]!r} is also listed as a feature column")
    keyed = partition_types(infos, columns, ids)
    typed: dict = {}  # column: (its type, the first file that has it with rows and not all null)
    for info in infos:
        for c in columns:
            if not (has_column(info, c, keyed) or element(c, info.schema)):
                raise missing_column(info, c, "column", keyed)
        if not sum(info.row_groups):
            continue  # no rows: its types are never read (pandas writes an empty frame's columns as null)
        for c in columns:
            t = column_type(info, c, keyed)
            if not _is_feature(t):
                raise DataError(f"{info.path}: column {c!r} has type {t}; feature columns must be numeric"
                                f"{_not_vector(t)}")
        for c in columns:
            t = column_type(info, c, keyed)
            if pa.types.is_null(t):
                continue  # nulls only in this file: missing values whatever the column's type elsewhere
            seen = typed.setdefault(c, (t, info.path))
            # a feature column may be int32 in one file and double in another (a writer's inferred
            # types drift): every piece is cast to the job's dtype as it is read
            if t != seen[0] and not (_is_numeric(t) and _is_numeric(seen[0])):
                raise DataError(f"schemas disagree: column {c!r} is {seen[0]} in {seen[1]} but {t} in {info.path}")
    check_id_columns(infos, ids, keyed)
    return columns


def has_column(info: FileInfo, c: str, keyed: dict) -> bool:
    """Whether ``info``'s file holds column ``c``, or its path gives ``c`` as a partition key read as a
    column (``keyed``: :func:`partition_types`)."""
    return c in info.schema.names or (c in keyed and any(k == c for k, _ in info.partitions))


def column_type(info: FileInfo, c: str, keyed: dict):
    """The Arrow type of column ``c`` in ``info``'s file: the file's own column (a vector element's: the
    vector column's) first, else the partition key's (``keyed``: :func:`partition_types`)."""
    if c in info.schema.names or c not in keyed:
        return info.schema.field(stored_column(c, info.schema)).type
    return keyed[c]


def missing_column(info: FileInfo, c: str, what: str, keyed: dict) -> DataError:
    """The error of a file without column ``c`` (``what``: "column", "id column"), naming the partition
    keys of its path, and saying when ``c`` is a key of other files' paths (``keyed``) but not of its."""
    keys = [k for k, _ in info.partitions]
    hive = (f"; partition keys in its path: {', '.join(keys)}" if keys else "") + (
        f"; {c!r} is a partition key of other files ({c}=... in their paths), not of this one"
        if c in keyed else "")
    return DataError(f"{info.path}: no {what} {c!r} (it has: {', '.join(info.schema.names)}){hive}")


def check_id_columns(infos: list[FileInfo], id_column, keyed: dict | None = None) -> dict:
    """Check the id column(s) ``id_column`` (:func:`id_columns`) in every file, of any reader (dense rows,
    sparse rows, vectors); returns ``{column: Arrow type}`` of those read from the paths' partition keys
    (``keyed``, :func:`partition_types`, when the caller has them).

    Each must be a column of every file or a partition key of its path (``day=2026-12-01/``; a key
    of some paths must be one of every file's that lacks the column), else a DataError names the file,
    its columns and its keys. An id column keeps its type in the predictions, so its files must agree,
    but for integers of other widths (Spark's IntegerType one night, pandas' int64 the next; read as the
    wider) and text of any Arrow string type (pyarrow's string, polars' large_string, a dictionary of
    strings): :func:`common_id_type`.
    """
    ids = id_columns(id_column)
    if keyed is None:
        keyed = partition_types(infos, (), ids)
    typed: dict = {}  # column: (its type, the first file that has it with rows)
    for info in infos:
        for c in ids:
            if not has_column(info, c, keyed):
                raise missing_column(info, c, "id column", keyed)
        if not sum(info.row_groups):
            continue  # no rows: its types are never read
        for c in ids:
            t = column_type(info, c, keyed)
            seen = typed.setdefault(c, (t, info.path))
            if common_id_type(t, seen[0]) is None:
                import pyarrow as pa

                # "integers of any width may mix" read as a contradiction for uint64 and int64
                ints = pa.types.is_integer(t) and pa.types.is_integer(seen[0])
                why = (f"integers of other widths are read as the wider, but no integer type holds every {seen[0]} "
                       f"and {t}: write the column as one type" if ints else
                       "an id column's type must be the same in every file (integers of any width may mix, and "
                       "strings of any Arrow string type)")
                raise DataError(f"schemas disagree: column {c!r} is {seen[0]} in {seen[1]} but {t} in {info.path}; "
                                f"{why}")
    return keyed


def wider_integer(a, b):
    """The Arrow integer type that holds every value of integer types ``a`` and ``b`` (the wider of two
    signed or two unsigned ones; a signed one wide enough for both when their signs differ), or None
    (not integers, or uint64 with a signed type: no integer type holds both)."""
    import pyarrow as pa

    if not (pa.types.is_integer(a) and pa.types.is_integer(b)):
        return None
    if pa.types.is_signed_integer(a) == pa.types.is_signed_integer(b):
        return a if a.bit_width >= b.bit_width else b
    unsigned, signed = (a, b) if pa.types.is_unsigned_integer(a) else (b, a)
    width = max(signed.bit_width, 2 * unsigned.bit_width)
    return {8: pa.int8(), 16: pa.int16(), 32: pa.int32(), 64: pa.int64()}.get(width)


def _text(t) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def common_id_type(a, b):
    """The Arrow type an id column of types ``a`` and ``b`` (in two files) is read as: the same type,
    the wider of two integer types (:func:`wider_integer`), string for text of any Arrow string type
    (read as Python strings either way), or None when none holds both."""
    import pyarrow as pa

    if a == b:
        return a
    if _text(a) and _text(b):
        return pa.string()
    return wider_integer(a, b)


def written_id_type(t):
    """The Arrow type the predictions write an id column of type ``t`` (:func:`id_type`) in: its own, but text
    as ``string`` and a dictionary as its values' type (the values the reads give: strings, numbers)."""
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.string() if _text(t) else t


def id_type(infos: list[FileInfo], id_column: str, partition_types: dict):
    """The Arrow type of the id column over the files (checked by :func:`check_schemas`): a partition
    key's (:func:`partition_types`), else the files' own, made common (:func:`common_id_type`); the
    first file's when none has rows."""
    import pyarrow as pa

    if id_column in partition_types:
        return partition_types[id_column]
    out = None
    for info in infos:
        if not sum(info.row_groups) or id_column not in info.schema.names:
            continue
        t = info.schema.field(id_column).type
        out = t if out is None or pa.types.is_null(out) else common_id_type(out, t) or out
    return out if out is not None else infos[0].schema.field(id_column).type


# ---------------------------------------------------------------------------
# Planning chunks


@dataclass(frozen=True)
class Piece:
    """One chunk: rows ``[lo, hi)`` of some row groups of one file, as planned from its footer."""

    path: str
    slices: tuple  # ((row group, lo, hi), ...) in file order
    rows: int
    signature: tuple  # (size, mtime) of the file when planned
    group_rows: tuple  # rows of each row group in ``slices``, from the footer
    constants: tuple = ()  # ((column, value), ...): partition keys of its path read as columns (one value)


def bytes_per_row(info: FileInfo, columns, id_column, dtype) -> float:
    """Decoded bytes a chunk task holds per row: the Arrow columns (from the footer's
    uncompressed sizes, at least 8 bytes a value) plus the feature matrix."""
    wanted = list(columns) + id_columns(id_column)
    decoded = 0.0
    for n, sizes in zip(info.row_groups, info.col_bytes):
        if n:
            decoded = max(decoded, sum(max(sizes.get(c, 0) / n, 8.0) for c in wanted))
    return (decoded or 8.0 * len(wanted)) + len(columns) * np.dtype(dtype).itemsize


def float_dtype(dtype) -> np.dtype:
    """The float type rows are read as: float32 or float64, else a ValueError."""
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


def inspect_files(path, storage_options=None) -> tuple[object, list[str], list[FileInfo]]:
    """The Parquet files of ``path`` (:func:`list_files`) and their footers (:func:`inspect_file`),
    read 16 at a time: (fs, files, infos)."""
    fs, files = list_files(path, storage_options)
    with ThreadPoolExecutor(max_workers=min(16, len(files))) as pool:
        infos = list(pool.map(lambda f: inspect_file(fs, f), files))
    return fs, files, infos


def plan_input(path, infos: list[FileInfo], chunk_rows: int | None, chunk_bytes: int | None, **plan) -> list[Piece]:
    """The pieces an input ``path`` is read in (:func:`plan_pieces`, ``plan`` its keywords): ``chunk_rows``
    rows, or ``chunk_bytes`` decoded bytes, by default the active client's budget
    (:func:`daskgmm.engine.cluster.chunk_budget`). A :class:`DataError` if the files hold no rows."""
    if chunk_rows is None and chunk_bytes is None:
        from daskgmm.engine.cluster import active_client, chunk_budget

        chunk_bytes = chunk_budget(active_client())
    check_rows(path, infos)
    return plan_pieces(infos, chunk_rows, chunk_bytes, **plan)


def check_rows(path, infos: list[FileInfo]) -> None:
    """A :class:`DataError` if the files of ``path`` hold no rows (from their footers)."""
    if not any(sum(info.row_groups) for info in infos):
        raise DataError(f"no rows in {path!r} ({len(infos)} file(s), all empty)")


def plan_pieces(infos: list[FileInfo], chunk_rows: int | None, chunk_bytes: int | None = None, *,
                 columns=(), id_column=None, dtype=np.float64, partition_types=None) -> list[Piece]:
    """Chunks of at most ``chunk_rows`` rows (or ``chunk_bytes`` decoded bytes) each.

    Consecutive small row groups of a file are merged; a row group larger than
    a chunk is cut into equal row slices. ``partition_types`` (:func:`partition_types`) are the
    columns read from the files' partition keys: each piece carries its file's values.
    """
    pieces = []
    wanted = list(columns) + id_columns(id_column)
    for info in infos:
        constants = partition_constants(info, wanted, partition_types or {})
        if chunk_rows:
            target = int(chunk_rows)
        elif chunk_bytes:
            target = max(256, int(chunk_bytes // bytes_per_row(info, columns, id_column, dtype)))
        else:
            target = DEFAULT_CHUNK_ROWS
        runs: list = [[]]  # whole row groups merged while they fit
        for i, n in enumerate(info.row_groups):
            if n == 0:
                continue
            if n > target:
                cuts = rows_per_part(n, -(-n // target))
                bounds = np.concatenate([[0], np.cumsum(cuts)])
                runs += [[(i, int(lo), int(hi))] for lo, hi in itertools.pairwise(bounds)] + [[]]
                continue
            if sum(hi - lo for _, lo, hi in runs[-1]) + n > target:
                runs.append([])
            runs[-1].append((i, 0, n))
        for group in filter(None, runs):
            pieces.append(Piece(info.path, tuple(group), sum(hi - lo for _, lo, hi in group), info.signature,
                                 tuple(info.row_groups[g] for g, _, _ in group), constants))
    return pieces


def rows_per_part(n_rows: int, n_parts: int) -> list[int]:
    """Split ``n_rows`` into ``n_parts`` nearly equal parts."""
    base = n_rows // n_parts
    extra = n_rows % n_parts
    return [base + (1 if i < extra else 0) for i in range(n_parts)]

