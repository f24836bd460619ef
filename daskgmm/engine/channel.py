"""A direct pass's own connection to each worker: an authenticated TCP stream served on its event loop.

A pass over placed chunks (:mod:`daskgmm.engine.passes`) calls every worker once per iteration.
Through distributed (``client.run``: the client's event loop, the scheduler, the worker, and back)
that round trip cost ~1.5 ms for a no-op and ~3 ms for a k-means pass on the two-core bench host;
over a stream the calling thread writes and reads itself, ~0.4 ms (docs/performance.md, twelfth
round). XGBoost's and LightGBM's Dask integrations do the same for their iterations: Dask places
the data and starts the processes, the training loop talks over connections of its own.

One :class:`Channel` per :class:`~daskgmm.engine.passes.ChunkedData`: for each worker, the client
asks it by ``client.run`` (:func:`serve`) to listen on its own host at a free port, for a key the
client made, then connects. Each side proves it holds the key without sending it (HMAC-SHA256 of
the other's random challenge): no process that merely reaches the port, nor one listening on a
client's tunnelled ``127.0.0.1``, can send or receive a message. Anyone who can hand a worker the
key can run code on it by ``client.run`` already. With TLS (a ``tls://`` worker address)
distributed's connection encrypts and this one would not: there is no channel, passes go through
``client.run``.

The worker serves one authenticated connection, then stops listening (and after
:data:`ACCEPT_SECONDS` if none came). A call carries a coroutine function and its arguments,
pickled; the worker awaits it on its event loop with ``dask_worker=`` as ``client.run`` does.
Every wait of the client is bounded (the caller's bound); any failure closes the channel, and the
caller goes on as it does when ``client.run`` fails.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import os
import pickle
import secrets
import selectors
import socket
import struct
import time

#: A worker stops listening this long after :func:`serve` if no authenticated connection came.
ACCEPT_SECONDS = 30.0
#: The client's bound on connecting to the workers and on the two-way proof of the key: one for all of them.
CONNECT_SECONDS = 5.0
#: After a worker did not listen or could not be reached, no channel to it is tried for the first figure's
#: seconds, doubled at each failure after it up to the second: a firewall that drops the packets costs one
#: opening (at most CONNECT_SECONDS) per period, a worker that was busy or restarting gets its channel back.
#: Per worker process (:data:`_backoff`): a new process at the same address starts afresh.
BACKOFF_SECONDS = (60.0, 3600.0)

#: ``{worker address: (time.monotonic() before which no channel to it is tried, the period that gave it, the id of
#: the worker process that failed)}``. By address and process: a worker that replaced it at another address, or a
#: new process at the same address (a fixed ``--worker-port``, a nanny's restart), starts afresh; the same process
#: keeps its period. The id is distributed's ``Worker.id``, unique to the process (the scheduler's ``"id"`` of a
#: worker is its name, which a restart keeps). It comes with :func:`serve`'s answer, and with each pass's answer
#: through ``client.run`` while no channel is tried (:func:`seen`): no round trip of its own. None when the worker
#: failed before it answered (the opening's ``client.run`` failed): the first id seen after is taken as its own.
_backoff: dict = {}
_clock = time.monotonic  # the back-off's (a test's own clock)

_HEAD = struct.Struct("<Q")
_NONCE = 32
_MAC = 32  # SHA-256


class ChannelError(ConnectionError):
    """The channel failed: closed, a bound passed, the peer did not prove the key, or a call raised."""


def _proof(key: bytes, who: bytes, nonce: bytes) -> bytes:
    return hmac.new(key, who + nonce, "sha256").digest()


#: TCP keepalive on both ends (idle seconds, probe interval, probes): a peer whose host vanished (no FIN: power
#: lost, network cut) is seen gone after ~30 s, as distributed's comms do (``distributed.comm.timeouts.tcp``).
#: The worker's end idles in a read between passes: without it the connection, its task and the key stayed forever.
KEEPALIVE = (10, 2, 10)


def _keepalive(sock) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    idle, interval, count = KEEPALIVE
    for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", interval), ("TCP_KEEPCNT", count)):
        if hasattr(socket, name):  # Linux; elsewhere the system's defaults (hours)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
            except OSError:
                pass


def _waiting(address: str, now: float) -> bool:
    until = _backoff.get(address, (0.0, 0.0))[0]
    return now < until


def _failed(addresses, now: float, ids=None) -> None:
    """Starts (or doubles) the back-off of ``addresses``, whose worker processes are ``ids``
    (``{address: Worker.id}``, where known); forgets the records of workers long gone."""
    first, cap = BACKOFF_SECONDS
    for address in addresses:
        last = _backoff.get(address)
        wid = (ids or {}).get(address)
        if last is not None and wid is not None and last[2] not in (None, wid):
            last = None  # another process at that address: its own first period
        period = first if last is None else min(2 * last[1], cap)
        _backoff[address] = (now + period, period, wid if wid is not None or last is None else last[2])
    for address, (until, _, _) in list(_backoff.items()):  # a long-lived client sees many addresses come and go
        if until + cap < now:
            _backoff.pop(address, None)


def seen(ids: dict) -> None:
    """The worker processes a pass through ``client.run`` answered from (``{address: Worker.id}``): the back-off of
    an address where another process answers ends (a restarted worker gets its channel at the next pass); one
    whose process was not known takes the id."""
    for address, wid in ids.items():
        last = _backoff.get(address)
        if last is None or wid is None or last[2] == wid:
            continue
        if last[2] is None:
            _backoff[address] = (last[0], last[1], wid)
        else:
            _backoff.pop(address, None)


def _host(address: str) -> str | None:
    """The host of a ``tcp://`` address (IPv6 without its brackets); None for any other protocol."""
    if not address.startswith("tcp://"):
        return None
    host = address[len("tcp://"):].rsplit(":", 1)[0]
    return host[1:-1] if host.startswith("[") else host


# ---------------------------------------------------------------------------- the worker's side


async def serve(key: bytes, dask_worker=None):
    """In a worker (``client.run``): listen on the worker's host for one connection that proves ``key``;
    returns ``(host, port, worker id)`` (the id: :data:`_backoff`'s), or None when the worker's address is
    not ``tcp://``."""
    host = _host(dask_worker.address)
    if host is None:
        return None
    done = asyncio.Event()

    async def handle(reader, writer):
        try:
            _keepalive(writer.get_extra_info("socket"))
            nonce = secrets.token_bytes(_NONCE)
            writer.write(nonce)
            await writer.drain()
            got = await asyncio.wait_for(reader.readexactly(_MAC + _NONCE), CONNECT_SECONDS)
            if done.is_set() or not hmac.compare_digest(got[:_MAC], _proof(key, b"client", nonce)):
                return  # not the client (or a second connection): nothing is read from it
            done.set()
            server.close()  # one connection per key
            writer.write(_proof(key, b"worker", got[_MAC:]))
            await writer.drain()
            while True:  # idle between passes: the client closes the connection when its data go
                (size,) = _HEAD.unpack(await reader.readexactly(_HEAD.size))
                function, args = pickle.loads(await reader.readexactly(size))
                try:
                    reply = (True, await function(*args, dask_worker=dask_worker))
                except Exception as exc:  # the caller runs the pass again as tasks, which raise it
                    reply = (False, repr(exc))
                body = pickle.dumps(reply, protocol=5)
                writer.write(_HEAD.pack(len(body)) + body)
                await writer.drain()
        except (Exception, asyncio.CancelledError):
            # the client gone, a bound passed, a call it could not unpickle: the client sees the connection
            # closed at once (and runs the pass another way). Cancelled (the worker closing): ended here, as
            # Python 3.11's streams log a handler's cancellation as an error with its traceback
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host=host, port=0)
    asyncio.get_running_loop().call_later(ACCEPT_SECONDS, server.close)
    return (*server.sockets[0].getsockname()[:2], dask_worker.id)


# ---------------------------------------------------------------------------- the client's side


def _recv_exact(sock: socket.socket, n: int, deadline: float) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ChannelError("no answer within the bound")
        sock.settimeout(left)
        k = sock.recv_into(view[got:])
        if not k:
            raise ChannelError("the worker closed the connection")
        got += k
    return bytes(buf)


def _sockaddr(address: str, served) -> tuple:
    """``(family, sockaddr)`` the client connects to for the worker at ``address`` that listens where ``served``
    (the ``(host, port)`` of :func:`serve`'s answer) says: the host of the worker's address, whose IPv6 zone
    (``fe80::1%eth0``) this host resolves, as distributed's own connections to that address do (the host the
    worker bound comes without it: ``getsockname`` keeps only the worker's interface number, meaningless
    here); or the numeric host the worker bound when the address names a host. Numeric only: no lookup
    that could outlast the bound."""
    if not isinstance(served, (tuple, list)) or len(served) != 2:
        raise ChannelError(f"{address} did not listen: {served!r}")
    for host in (_host(address), served[0]):
        try:
            family, _, _, _, sockaddr = socket.getaddrinfo(
                host, int(served[1]), type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)[0]
        except (OSError, ValueError, TypeError, UnicodeError):
            continue
        return family, sockaddr
    raise ChannelError(f"{address} listens at {served!r}: not a numeric address")


def _read(sock: socket.socket, n: int):
    buf = b""
    while len(buf) < n:
        yield selectors.EVENT_READ
        try:
            got = sock.recv(n - len(buf))
        except (BlockingIOError, InterruptedError):
            continue
        if not got:
            raise ChannelError("the worker closed the connection")
        buf += got
    return buf


def _write(sock: socket.socket, data: bytes):
    view = memoryview(data)
    while view:
        yield selectors.EVENT_WRITE
        try:
            view = view[sock.send(view):]
        except (BlockingIOError, InterruptedError):
            continue


def _handshake(sock: socket.socket, key: bytes):
    """The client's side of the two-way proof on a socket connecting without blocking: a generator that
    yields the event it waits for next (:func:`_connect_all` drives all of them)."""
    yield selectors.EVENT_WRITE  # connected, or failed
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        raise OSError(err, os.strerror(err))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a pass's messages are small
    _keepalive(sock)
    theirs = yield from _read(sock, _NONCE)
    mine = secrets.token_bytes(_NONCE)
    yield from _write(sock, _proof(key, b"client", theirs) + mine)
    if not hmac.compare_digest((yield from _read(sock, _MAC)), _proof(key, b"worker", mine)):
        raise ChannelError("the worker did not prove the key")


#: What connecting without blocking returns when it has started (Windows: WSAEWOULDBLOCK).
_CONNECTING = {0, errno.EINPROGRESS, errno.EWOULDBLOCK, getattr(errno, "WSAEWOULDBLOCK", errno.EWOULDBLOCK)}


def _connect_all(targets: dict, key: bytes, deadline: float) -> tuple[dict, dict]:
    """Connects to every worker of ``{address: (family, sockaddr)}`` at once, in this thread, and each side
    proves ``key``; all by ``deadline`` (``time.monotonic()``): a slow worker costs the others nothing, and
    several slow ones no more than one. ``({address: blocking socket}, {address: the exception it failed
    with})``, every address in one of them."""
    socks: dict = {}
    errors: dict = {}
    sel = selectors.DefaultSelector()
    try:
        for w, (family, sockaddr) in targets.items():
            try:
                sock = socks[w] = socket.socket(family, socket.SOCK_STREAM)
                sock.setblocking(False)
                err = sock.connect_ex(sockaddr)
                if err not in _CONNECTING:
                    raise OSError(err, os.strerror(err))  # e.g. EINVAL: a link-local address without its zone
                steps = _handshake(sock, key)
                sel.register(sock, next(steps), (w, steps))
            except OSError as exc:
                errors[w] = exc
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for ready, _ in sel.select(left):
                w, steps = ready.data
                try:
                    sel.modify(ready.fileobj, steps.send(None), ready.data)
                except StopIteration:
                    sel.unregister(ready.fileobj)
                except OSError as exc:  # ChannelError among them
                    sel.unregister(ready.fileobj)
                    errors[w] = exc
        for pending in list(sel.get_map().values()):
            errors[pending.data[0]] = ChannelError("no answer within the bound")
    except BaseException:
        for sock in socks.values():
            sock.close()
        raise
    finally:
        sel.close()
    for w in errors:
        if w in socks:
            socks.pop(w).close()
    for sock in socks.values():
        sock.setblocking(True)  # Channel.call sets each wait's timeout
    return socks, errors


class Channel:
    """Connections to workers (``{address: socket}``), each authenticated; :meth:`call` runs a
    coroutine function on every one of them. Not thread-safe: one caller at a time (a pass)."""

    def __init__(self, socks: dict):
        self._socks = socks

    @property
    def workers(self) -> set:
        return set(self._socks)

    @classmethod
    def open(cls, client, workers, timeout: float) -> Channel | None:
        """A channel to ``workers`` (addresses), or None when one of them is not ``tcp://``, is in its back-off
        (:data:`BACKOFF_SECONDS`), or did not listen or cannot be reached from here (then passes go through
        ``client.run``, as before). All of it within ``timeout`` seconds: the workers are connected to at once."""
        workers = sorted(workers)
        if not workers or any(_host(w) is None or _waiting(w, _clock()) for w in workers):
            return None
        deadline = time.monotonic() + timeout
        key = secrets.token_bytes(32)
        try:
            where = client.run(serve, key, workers=workers, on_error="return", callback_timeout=timeout)
        except Exception:
            _failed(workers, _clock())  # which worker held it (frozen, gone) is not known
            return None
        targets: dict = {}
        ids: dict = {}
        failed = []
        for w in workers:
            served = where.get(w)
            if isinstance(served, (tuple, list)) and len(served) == 3:
                served, ids[w] = served[:2], served[2]
            try:
                targets[w] = _sockaddr(w, served)
            except ChannelError:
                failed.append(w)
        socks: dict = {}
        if not failed:
            socks, errors = _connect_all(targets, key, min(deadline, time.monotonic() + CONNECT_SECONDS))
            failed = list(errors)
        if failed:
            for s in socks.values():
                s.close()
            _failed(failed, _clock(), ids)
            return None
        for w in workers:
            _backoff.pop(w, None)
        return cls(socks)

    def call(self, function, args: tuple, timeout: float) -> dict:
        """``await function(*args, dask_worker=worker)`` on every worker; ``{address: result}``. Raises
        :class:`ChannelError` (the channel is then closed) when a worker is gone, raised, or did not answer
        within ``timeout`` seconds; any other exception (a signal's) closes it too."""
        if not self._socks:
            raise ChannelError("the channel is closed")
        deadline = time.monotonic() + timeout
        body = pickle.dumps((function, args), protocol=5)
        frame = _HEAD.pack(len(body)) + body
        out = {}
        try:
            for sock in self._socks.values():
                sock.settimeout(max(deadline - time.monotonic(), 1e-3))
                sock.sendall(frame)
            for w, sock in self._socks.items():
                (size,) = _HEAD.unpack(_recv_exact(sock, _HEAD.size, deadline))
                ok, value = pickle.loads(_recv_exact(sock, size, deadline))
                if not ok:
                    raise ChannelError(f"{w}: {value}")
                out[w] = value
        except BaseException as exc:
            self.close()  # a frame half sent or half read: the streams cannot be used again
            if isinstance(exc, OSError) and not isinstance(exc, ChannelError):
                raise ChannelError(str(exc) or type(exc).__name__) from exc
            raise
        return out

    def close(self) -> None:
        socks, self._socks = self._socks, {}
        for s in socks.values():
            try:
                s.close()
            except OSError:
                pass
