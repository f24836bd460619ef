"""The ``daskgmm`` command: fit, predict, score, sample and inspect models on Parquet data.

Made for scheduled ETL jobs: outputs are written atomically (a staging
directory renamed into place, with ``_SUCCESS``), progress goes to stderr, a
JSON summary to ``--metrics-out``, and the exit status tells what happened.

This module is the entry point (``daskgmm.cli:main``): exit statuses, signals and
``--metrics-out``. The command line is parsed in :mod:`daskgmm.cli.args`, what the
commands share is in :mod:`daskgmm.cli.runtime`, the commands that write a model in
:mod:`daskgmm.cli.fit` and the others in :mod:`daskgmm.cli.read`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading

import daskgmm.engine.stop as stop
from daskgmm.cli.args import (
    DIRECTORY_OUTPUTS,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    build_parser,
    inside_directory_output,
    output_conflict,
    resolve,
)
from daskgmm.cli.config import (
    EXPORT,
    FIT,
    INFO,
    OPTIONS,
    PREDICT,
    SAMPLE,
    SCORE,
    SELECT,
    SHOW_CONFIG,
    UPDATE,
    ConfigError,
)
from daskgmm.cli.fit import BAYESIAN_OPTIONS, cmd_fit, cmd_update, fingerprint, update_fingerprint
from daskgmm.cli.read import cmd_export, cmd_info, cmd_predict, cmd_sample, cmd_score, cmd_select, cmd_show_config
from daskgmm.cli.runtime import CollapsedFit, Reporter, WorkersDied, open_data

# the names these helpers had when this module held them all (tests and scripts import them)
_fingerprint, _update_fingerprint, _open = fingerprint, update_fingerprint, open_data


HANDLERS = {FIT: cmd_fit, PREDICT: cmd_predict, SCORE: cmd_score, SAMPLE: cmd_sample, INFO: cmd_info,
            SELECT: cmd_select, UPDATE: cmd_update, SHOW_CONFIG: cmd_show_config, EXPORT: cmd_export}


def _write_metrics(path, metrics, storage_options=None):
    from daskgmm.io.files import get_fs, is_local, strip_protocol
    from daskgmm.io.modelfiles import jsonable
    from daskgmm.io.outputs import in_made_directory, write_whole

    fs = get_fs(str(path), storage_options)
    text = json.dumps(jsonable(metrics), indent=2).encode()
    if not is_local(fs):
        from daskgmm.io.files import cleanup_bound

        # one PUT (whole or absent), within the clean-up deadline of a store that went silent
        fs.pipe_file(strip_protocol(fs, str(path)), text, **cleanup_bound(fs))
        return
    in_made_directory(os.path.dirname(os.path.abspath(path)), lambda: write_whole(str(path), lambda f: f.write(text)),
                      attempts=3)


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: unwound like Ctrl-C (staging removed, cluster closed), exit 143."""


def _on_signal(signum, frame):
    # recorded as well as raised: raised inside a gc callback or a __del__, the exception is lost
    exc = Terminated if signum == signal.SIGTERM else KeyboardInterrupt
    stop.request(exc)
    if not stop.deferring():  # else raised where the deferred block ends (the cluster's start)
        raise exc()


def main(argv=None) -> int:
    """Entry point of the ``daskgmm`` console script; returns the exit status.

    SIGTERM (what schedulers send first) is handled like SIGINT: the job stops
    within seconds, says so, removes its staging directories, closes its
    cluster and writes the error metrics; exit status 143 (130 for SIGINT).
    """
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    stop.clear()
    _forget_silence()
    _forget_committed()
    try:
        return _main(argv)
    finally:
        stop.clear()
        _forget_silence()
        _forget_committed()
        for s, handler in previous.items():
            signal.signal(s, handler)


def console() -> None:
    """The ``daskgmm`` console script and ``python -m daskgmm``: :func:`main`, then exit with its status.

    Once the command has returned, its outputs, metrics and messages are final, but the interpreter's exit
    hooks still run (about half a second with Dask loaded). A SIGTERM or SIGINT landing then ended a finished
    job by the signal's default action, exit 143 or 130 with no message, its metrics saying "ok" (a scheduler's
    timeout read it as killed). The first such signal is ignored; a second one ends the process as before.
    """
    status = main()

    def second_time(signum, frame):
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def first_time(signum, frame):
        signal.signal(signum, second_time)

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, first_time)
    sys.exit(status)


def _main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    metrics = {"command": args.command, "status": "running"}
    metrics_out = getattr(args, "metrics_out", None)
    storage = None
    status = EXIT_FAILURE
    quiet = bool(getattr(args, "quiet", False))
    o = given = failure = None
    try:
        try:
            o = resolve(args)
        except Exception as exc:  # refused once read: the metrics go where the config (or a flag) says
            given = getattr(exc, "daskgmm_options", None)
            if given is not None:
                metrics_out = getattr(given, "metrics_out", None)
                storage = getattr(given, "storage_options", None)
            raise
        metrics_out = getattr(o, "metrics_out", None)
        storage = getattr(o, "storage_options", None)
        quiet = bool(getattr(o, "quiet", False))
        log = Reporter(quiet)
        if o.command != SHOW_CONFIG:
            _check_kernel_choice()  # before any cluster starts: every worker would refuse it
        status = HANDLERS[o.command](o, log, metrics)
        stop.check()  # a signal whose exception was lost after the last safe point
        metrics["status"] = "ok"
    except (UsageError, ConfigError) as exc:
        status, failure = EXIT_USAGE, exc
        _fail(metrics, exc, status)
    except Terminated as exc:
        status = 143
        _fail(metrics, _stopped("terminated (SIGTERM)", exc, "no output written", o), status)
    except KeyboardInterrupt as exc:
        status = 130
        _fail(metrics, _stopped("interrupted", exc, "", o), status)
    except BrokenPipeError as exc:
        status = EXIT_FAILURE
        if _stdout_closed():  # `daskgmm info ... | head`: the reader went away; nothing to say
            metrics.update(status="error", exit_code=status, error="standard output closed by its reader")
        else:
            _fail(metrics, exc, status)
    except Exception as exc:  # bad data or parameters: exit 2; every other failure: exit 1 with the reason
        status, failure = EXIT_USAGE if _bad_input(exc) else EXIT_FAILURE, exc
        _fail(metrics, exc, status)
    # the job's status is settled: a signal from here on is recorded, not raised, so that the metrics and the
    # clean-up finish (raised, it ended the command with a traceback and exit 1, the metrics perhaps unwritten)
    with stop.deferred():
        status = _finish(o, given, args, metrics, metrics_out, storage, failure, status)
    late = stop.pending()
    if late is not None and status == EXIT_OK:
        status = 143 if issubclass(late, Terminated) else 130
        what = "terminated (SIGTERM)" if status == 143 else "interrupted"
        print(f"daskgmm: {what} as the job ended: it had finished, its outputs and metrics are complete",
              file=sys.stderr, flush=True)
    return status


def _finish(o, given, args, metrics, metrics_out, storage, failure, status) -> int:
    """The end of a command whose status is settled: what a silent store kept, the metrics, the directories
    made for outputs of a failed job. Returns the exit status (a failure to write the metrics makes it 1)."""
    _say_left_behind(metrics)
    job = next(x for x in (o, given, args) if x is not None)
    if metrics_out and (output_conflict(job, "metrics_out") or inside_directory_output(job, "metrics_out")):
        metrics_out = None  # never over the data or the model, nor into an output, whatever failed first
    if metrics_out and (os.path.isdir(metrics_out) or getattr(failure, "daskgmm_unwritable", None) == metrics_out):
        metrics_out = None  # the job failed on that very path ("is a directory", ...): said once, not tried again
    if metrics_out:
        try:
            _write_metrics(metrics_out, metrics, storage)
        except Exception as exc:  # the job's own status stands; say why there are no metrics (no traceback)
            from daskgmm.io.files import note_silent, silence_seen, unreachable, unreachable_error

            where = f"cannot write --metrics-out {metrics_out}"
            if (isinstance(exc, TimeoutError) and silence_seen() is not None) or note_silent(exc):
                why = (f"--metrics-out {metrics_out} not written: the object store did not answer within the "
                       "job's clean-up deadline (an object there is an earlier run's)")
            elif unreachable(exc):
                why = unreachable_error(exc, where)
            else:
                why = f"{where}: {type(exc).__name__}: {exc}"
            print(f"daskgmm: error: {why}", file=sys.stderr)
            status = status or EXIT_FAILURE
    outputs = sys.modules.get("daskgmm.io.outputs")  # not loaded: no directory made (nor paid for)
    if outputs is not None:
        outputs.remove_made_directories()  # what a failed job made for its outputs and left empty
    return status


def _forget_committed() -> None:
    outputs = sys.modules.get("daskgmm.io.outputs")  # not loaded: nothing committed
    if outputs is not None:
        outputs.forget_committed()


def _outputs_of(o) -> set:
    """The paths of the outputs a command commits (staged, then swapped into place)."""
    return {str(getattr(o, key)) for key in DIRECTORY_OUTPUTS if getattr(o, key, None)}


def _committed() -> list:
    outputs = sys.modules.get("daskgmm.io.outputs")
    return outputs.committed() if outputs is not None else []


def _forget_silence() -> None:
    files = sys.modules.get("daskgmm.io.files")  # not loaded: no store was touched
    if files is not None:
        files.forget_silence()


def _say_left_behind(metrics) -> None:
    """Name what a failed job's clean-up left on a store that went silent (its staging prefixes, its
    locks: :func:`daskgmm.io.files.left_behind`), on stderr and in the metrics (``left_behind``)."""
    files = sys.modules.get("daskgmm.io.files")
    left = files.left_behind() if files is not None else []
    if left:
        print("daskgmm: the object store did not answer: left on it for the next job (or you) to remove: "
              + "; ".join(left), file=sys.stderr, flush=True)
        metrics["left_behind"] = left


def _stopped(what: str, exc: BaseException, otherwise: str, o=None) -> str:
    """What a signal's stop left: nothing written, the outputs of ``o`` it had committed (complete), or a commit
    past its commit point (its journal written), which the next job writing one of its outputs finishes:
    "no output written" told the user the old outputs stood, where (on S3) they were deleted and the new ones
    not all copied in (user-trial-r13)."""
    targets = getattr(exc, "daskgmm_commit_under_way", None)
    # the job's outputs, not the snapshots it keeps beside its checkpoint (update)
    done = [t for t in _committed() if o is not None and t in _outputs_of(o)]
    if not targets and done:  # stopped in the job's last steps (closing its cluster, a plot, a summary)
        return f"{what}: stopped after committing {', '.join(done)} (complete)"
    if not targets:
        return f"{what}: stopped, {otherwise}" if otherwise else what
    one = len(targets) == 1
    return (f"{what} in the middle of committing {', '.join(targets)}: the commit was decided (its journal "
            f"written) and is left to the next job writing {'it' if one else 'one of them'}, which finishes it "
            f"first; until then take {'it' if one else 'them'} as incomplete")


def _stdout_closed() -> bool:
    """Whether stdout's reader has gone; if so stdout now writes to devnull, so that the interpreter's
    last flush does not fail again (as the Python docs advise for SIGPIPE)."""
    import select

    try:
        fd = sys.stdout.fileno()
        poll = select.poll()
        poll.register(fd, select.POLLOUT)
        gone = any(events & select.POLLERR for _, events in poll.poll(0))  # a pipe without a reader
    except (AttributeError, OSError, ValueError):
        return False
    if gone:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
    return gone


def _bad_input(exc) -> bool:
    # imported only when a command failed: --help, show-config and usage errors never pay for
    # Dask, pyarrow and scikit-learn
    from daskgmm.io.files import DataError

    if isinstance(exc, DataError):
        return True
    # scikit-learn's InvalidParameterError is raised only once scikit-learn is imported: a command refused before
    # (a model path that holds no model, data that is not there) spent ~2 s importing it to find that out
    if "sklearn" not in sys.modules:
        return False
    from daskgmm.validation.params import InvalidParameterError

    return isinstance(exc, InvalidParameterError)


def _check_kernel_choice() -> None:
    from daskgmm.kernels import compiled

    try:
        compiled.ready()
    except compiled.KernelChoiceError as exc:
        raise UsageError(str(exc)) from None


def _fail(metrics, exc, status):
    from daskgmm.engine.cluster import ClusterError
    from daskgmm.io.files import EndpointUnreachableError, note_silent, silent_store_message
    from daskgmm.io.outputs import OutputBusyError

    text = exc if isinstance(exc, str) else f"{exc}"
    # a silent store (also behind a message naming the output): what is still written on it (--metrics-out)
    # waits the clean-up deadline at most
    silent = not isinstance(exc, str) and note_silent(exc) and isinstance(exc, OSError)
    # our own messages say what happened
    own = (ClusterError, OutputBusyError, WorkersDied, EndpointUnreachableError, CollapsedFit)
    if silent:
        text = silent_store_message(exc)
    elif not isinstance(exc, str) and status == EXIT_FAILURE and not isinstance(exc, own):
        text = f"{type(exc).__name__}: {exc}"
    print(f"daskgmm: error: {text}", file=sys.stderr, flush=True)
    metrics.update(status="error", exit_code=status, error=text)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["BAYESIAN_OPTIONS", "EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "HANDLERS", "OPTIONS", "Reporter", "Terminated",
           "UsageError", "WorkersDied", "build_parser", "main", "resolve"]
