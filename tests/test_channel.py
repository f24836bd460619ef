"""The direct passes' channel to the workers (daskgmm.engine.channel): authenticated both ways,
bounded, closed with the data, and never the route when distributed's connection is not plain TCP."""

import gc
import os
import pickle
import secrets
import socket
import time

import dask.array as da
import numpy as np
import pytest

from daskgmm.engine import channel as ch
from daskgmm.engine.passes import ChunkedData
from daskgmm.kernels import MixtureRequest, ModelSpec, kmeans_natural_params


class _Touch:
    """Unpickling it creates a file: a message a worker must never read from an unproven peer."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _connect(host_port, key: bytes) -> socket.socket:
    """One authenticated connection to a numeric ``(host, port)``, within CONNECT_SECONDS, as Channel.open makes
    each of its own."""
    family, _, _, _, sockaddr = socket.getaddrinfo(*host_port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)[0]
    socks, errors = ch._connect_all({None: (family, sockaddr)}, key, time.monotonic() + ch.CONNECT_SECONDS)
    if errors:
        raise errors[None]
    return socks[None]


def _listen(client, key):
    (worker,) = sorted(client.scheduler_info()["workers"])[:1]
    (where,) = client.run(ch.serve, key, workers=[worker]).values()
    return worker, tuple(where[:2])  # (host, port, the worker's id)


def test_a_worker_reads_nothing_from_a_peer_that_does_not_prove_the_key(process_client, tmp_path):
    key = secrets.token_bytes(32)
    _, where = _listen(process_client, key)
    touched = tmp_path / "touched"
    body = pickle.dumps((_Touch(str(touched)), ()))
    with socket.create_connection(where, timeout=5) as s:
        s.settimeout(5)
        nonce = s.recv(32)
        assert len(nonce) == 32
        wrong = ch._proof(secrets.token_bytes(32), b"client", nonce) + secrets.token_bytes(32)
        s.sendall(wrong + ch._HEAD.pack(len(body)) + body)
        assert s.recv(100) == b""  # closed without a word: no proof of the key, no message read
    time.sleep(0.2)
    assert not touched.exists()
    # the worker still listens for the client that holds the key (one proven connection per key)
    sock = _connect(where, key)
    try:
        c = ch.Channel({"w": sock})
        assert c.call(_where, (), timeout=10) == {"w": os.getpid() != 0}
    finally:
        sock.close()


async def _where(dask_worker=None):
    return dask_worker is not None


async def _raises(dask_worker=None):
    raise ValueError("no such chunk")


def test_a_client_does_not_talk_to_a_listener_that_does_not_prove_the_key():
    """A port that answers but does not hold the key (another process on a tunnelled client's own
    127.0.0.1): the client sends its proof, never the key, and takes nothing from it."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        import threading

        seen = []

        def fake():
            conn, _ = server.accept()
            with conn:
                conn.sendall(secrets.token_bytes(32))
                seen.append(conn.recv(64))
                conn.sendall(secrets.token_bytes(32))  # a wrong proof

        t = threading.Thread(target=fake)
        t.start()
        key = secrets.token_bytes(32)
        with pytest.raises(ch.ChannelError, match="did not prove the key"):
            _connect(server.getsockname(), key)
        t.join(5)
        assert seen and key not in seen[0]


def test_a_call_that_raises_or_outlives_its_bound_closes_the_channel(process_client):
    key = secrets.token_bytes(32)
    _, where = _listen(process_client, key)
    c = ch.Channel({"w": _connect(where, key)})
    with pytest.raises(ch.ChannelError, match="no such chunk"):
        c.call(_raises, (), timeout=10)
    assert not c.workers
    with pytest.raises(ch.ChannelError, match="closed"):
        c.call(_where, (), timeout=10)
    key = secrets.token_bytes(32)
    _, where = _listen(process_client, key)
    c = ch.Channel({"w": _connect(where, key)})
    t0 = time.monotonic()
    with pytest.raises(ch.ChannelError):
        c.call(_sleeps, (3.0,), timeout=0.3)
    assert time.monotonic() - t0 < 2 and not c.workers


async def _sleeps(seconds, dask_worker=None):
    import asyncio

    await asyncio.sleep(seconds)
    return True


def test_no_channel_where_distributed_would_encrypt_or_nothing_listens(process_client):
    assert ch._host("tcp://10.0.0.1:8786") == "10.0.0.1" and ch._host("tcp://[::1]:8786") == "::1"
    assert ch._host("tls://10.0.0.1:8786") is None and ch._host("inproc://x/1/2") is None
    assert ch.Channel.open(process_client, ["tls://127.0.0.1:1"], timeout=5) is None
    with socket.socket() as s:  # a port where nothing listens: refused, at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(OSError):
        _connect(("127.0.0.1", port), b"k" * 32)
    assert time.monotonic() - t0 < 2


def test_the_channel_is_closed_with_its_data(process_client):
    X = da.random.default_rng(0).standard_normal((4000, 3), chunks=1000)
    data = ChunkedData(process_client.persist(X), cache="memory")
    req = [MixtureRequest([ModelSpec(kmeans_natural_params(np.eye(3)), "spherical", "hard")])]
    data.run(req, np.zeros(3))  # as tasks
    data.run(req, np.zeros(3))  # over the channel
    assert data.direct_passes == 1 and data._channel is not None
    socks = list(data._channel._socks.values())
    del data
    gc.collect()
    assert all(s.fileno() == -1 for s in socks)


class _Stand:
    """A worker as :func:`daskgmm.engine.channel.serve` sees it: its address and its process's id."""

    def __init__(self, address, id="Worker-stand"):
        self.address, self.id = address, id


@pytest.fixture
def worker_loop():
    """An event loop in a thread, the workers' stand-in: ``serve`` listens on it and runs the calls."""
    import asyncio
    import threading

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop

    async def drain():  # the connections' handlers end before the loop does
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    asyncio.run_coroutine_threadsafe(drain(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


class _Workers:
    """``client.run(serve, key, ...)`` for Channel.open without a cluster: ``answer(address, key)`` says where each
    worker listens; None, or no ``answer``: the real ``serve`` on ``loop``, as a worker at that address."""

    def __init__(self, loop=None, answer=None):
        self.loop, self.answer, self.calls = loop, answer, []

    def run(self, fn, key, workers, **kwargs):
        import asyncio

        self.calls.append(sorted(workers))
        out = {}
        for w in workers:
            got = None if self.answer is None else self.answer(w, key)
            if got is None:
                got = asyncio.run_coroutine_threadsafe(fn(key, dask_worker=_Stand(w)), self.loop).result(5)
            out[w] = got
        return out


def _refused_port():
    with socket.socket() as s:  # a port where nothing listens: refused, at once
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_worker_not_reached_is_tried_again_after_a_doubling_back_off(monkeypatch, worker_loop):
    """Connecting costs up to CONNECT_SECONDS where a firewall drops the packets: a worker this process could
    not reach gets no channel for a period (its passes go through client.run), doubled at each failure up to a
    cap; then it is tried again, and a worker busy or restarting at the time gets its channel back."""
    now = [1000.0]
    monkeypatch.setattr(ch, "_clock", lambda: now[0])
    monkeypatch.setattr(ch, "_backoff", {})
    monkeypatch.setattr(ch, "BACKOFF_SECONDS", (60.0, 150.0))
    port = _refused_port()
    reachable = False
    client = _Workers(worker_loop, lambda w, key: None if reachable else ("127.0.0.1", port))
    old, new = "tcp://127.0.0.1:9", "tcp://127.0.0.1:10"

    def tried(workers):
        calls = len(client.calls)
        c = ch.Channel.open(client, workers, timeout=5)
        return len(client.calls) > calls, c

    assert tried([old]) == (True, None)
    now[0] += 59
    assert tried([old]) == (False, None) and tried([new, old]) == (False, None)  # in its period: no cost
    assert tried([new]) == (True, None)  # the worker that replaced it: its own record
    now[0] += 2
    assert tried([old]) == (True, None)  # tried again: failed, the period doubled
    now[0] += 119
    assert tried([old]) == (False, None)
    now[0] += 2
    assert tried([old]) == (True, None)  # the period capped: 150 s, not 240
    now[0] += 149
    assert tried([old]) == (False, None)
    now[0] += 2
    reachable = True
    done, c = tried([old])
    try:
        assert done and c is not None and old not in ch._backoff  # it got its channel back
        assert c.call(_where, (), timeout=5) == {old: True}
    finally:
        c.close()
    now[0] += 1000
    ch._failed([], now[0])  # workers gone for longer than the cap: forgotten
    assert not ch._backoff


def test_a_new_process_at_the_address_of_a_worker_in_its_back_off_starts_afresh(monkeypatch, worker_loop):
    """A worker restarted at the same address (a fixed --worker-port, a nanny's restart) is another process: it
    does not wait out the back-off of the one it replaced, while the same process keeps its own. Its id comes with
    the opening's answer and with each pass's answer through client.run (channel.seen): no round trip of its own."""
    now = [1000.0]
    monkeypatch.setattr(ch, "_clock", lambda: now[0])
    monkeypatch.setattr(ch, "_backoff", {})
    monkeypatch.setattr(ch, "BACKOFF_SECONDS", (60.0, 150.0))
    port = _refused_port()
    w, pid = "tcp://127.0.0.1:9", ["Worker-a"]
    client = _Workers(worker_loop, lambda w, key: ("127.0.0.1", port, pid[0]))

    def tried():
        calls = len(client.calls)
        assert ch.Channel.open(client, [w], timeout=5) is None
        return len(client.calls) > calls

    assert tried() and ch._backoff[w][1:] == (60.0, "Worker-a")
    ch.seen({w: "Worker-a"})  # a pass through client.run answered by the same process: its back-off stays
    now[0] += 59
    assert not tried()
    now[0] += 2
    assert tried() and ch._backoff[w][1:] == (120.0, "Worker-a")  # the same process failed again: doubled
    pid[0] = "Worker-b"
    ch.seen({w: "Worker-b"})  # restarted at the same address: the next pass tries at once
    assert w not in ch._backoff and tried() and ch._backoff[w][1:] == (60.0, "Worker-b")  # its own first period
    now[0] += 61
    pid[0] = "Worker-c"  # replaced between two passes, failed at the next opening: afresh, not doubled
    assert tried() and ch._backoff[w][1:] == (60.0, "Worker-c")
    ch._backoff[w] = (now[0] + 60, 60.0, None)  # the opening's client.run failed: the worker's process not known
    ch.seen({w: "Worker-d"})
    assert ch._backoff[w][2] == "Worker-d" and not tried()  # taken as the one that failed
    ch._failed([w], now[0])  # a failure that does not say which process (a connection lost): the one it knew
    assert ch._backoff[w][1:] == (120.0, "Worker-d")
    ch.seen({w: "Worker-e"})  # so a new process there is still told apart
    assert w not in ch._backoff


def _slow_worker(key, delay):
    """A listener that proves ``key`` as a worker does, ``delay`` seconds after the connection (a busy worker);
    ``(host, port)``. Its thread ends when the client closes the connection."""
    import threading

    server = socket.create_server(("127.0.0.1", 0))

    def prove():
        with server:
            conn, _ = server.accept()
        with conn:
            time.sleep(delay)
            nonce = secrets.token_bytes(32)
            conn.sendall(nonce)
            got = b""
            while len(got) < 64:
                got += conn.recv(64 - len(got))
            if ch._proof(key, b"client", nonce) == got[:32]:
                conn.sendall(ch._proof(key, b"worker", got[32:]))
                conn.recv(1)

    threading.Thread(target=prove, daemon=True).start()
    return server.getsockname()


def test_opening_several_workers_is_bounded_by_one_deadline(monkeypatch):
    """The workers are connected to at once: three busy ones cost what one does (not three times), and three
    that never answer cost the opening's bound once (not CONNECT_SECONDS each, nor past the pass's bound)."""
    monkeypatch.setattr(ch, "_backoff", {})
    workers = [f"tcp://127.0.0.1:{i}" for i in (1, 2, 3)]
    t0 = time.monotonic()
    c = ch.Channel.open(_Workers(answer=lambda w, key: _slow_worker(key, 0.4)), workers, timeout=5)
    took = time.monotonic() - t0
    assert c is not None and c.workers == set(workers)
    c.close()
    assert took < 0.8  # one after another: 1.2 s

    silent = []  # listening, never accepting: the client connects, then waits for the worker's challenge
    for _ in workers:
        silent.append(socket.create_server(("127.0.0.1", 0)))
    try:
        t0 = time.monotonic()
        where = {w: s.getsockname() for w, s in zip(workers, silent)}
        assert ch.Channel.open(_Workers(answer=lambda w, key: where[w]), workers, timeout=0.3) is None
        assert time.monotonic() - t0 < 1.5  # CONNECT_SECONDS (5 s) for the first, one after another
        assert set(ch._backoff) == set(workers)  # each of them, not only the first that failed
    finally:
        for s in silent:
            s.close()


def _link_local():
    """``(address, interface)`` of an IPv6 link-local address of this host, or None."""
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                hexaddr, _, _, scope, _, name = line.split()
                if scope == "20":  # link
                    return socket.inet_ntop(socket.AF_INET6, bytes.fromhex(hexaddr)), name
    except (OSError, ValueError):
        pass
    return None


def test_a_worker_at_a_link_local_address_with_its_zone(monkeypatch, worker_loop):
    """``tcp://[fe80::1%eth0]:port``: the worker listens on that interface, and the client connects with the zone
    as its own host names it (as distributed's connections do), not with the worker's bare ``fe80::1`` (EINVAL)."""
    _, name = socket.if_nameindex()[0]
    family, sockaddr = ch._sockaddr(f"tcp://[fe80::1%{name}]:1", ("fe80::1", 5))
    assert family == socket.AF_INET6 and sockaddr[:2] == ("fe80::1", 5)
    assert sockaddr[3] == socket.if_nametoindex(name)
    assert ch._sockaddr("tcp://worker-a:1", ("10.0.0.2", 5)) == (socket.AF_INET, ("10.0.0.2", 5))  # no lookup
    with pytest.raises(ch.ChannelError, match="did not listen"):
        ch._sockaddr("tcp://10.0.0.2:1", OSError("no such port"))
    found = _link_local()
    if found is None:
        pytest.skip("no IPv6 link-local address on this host")
    monkeypatch.setattr(ch, "_backoff", {})
    worker = "tcp://[{}%{}]:1".format(*found)
    c = ch.Channel.open(_Workers(worker_loop), [worker], timeout=5)
    assert c is not None, ch._backoff
    try:
        assert c.call(_where, (), timeout=5) == {worker: True}
    finally:
        c.close()


def test_dask_config_turns_the_channel_off(process_client):
    import dask

    X = da.random.default_rng(0).standard_normal((4000, 3), chunks=1000)
    data = ChunkedData(process_client.persist(X), cache="memory")
    req = [MixtureRequest([ModelSpec(kmeans_natural_params(np.eye(3)), "spherical", "hard")])]
    with dask.config.set({"daskgmm.pass-channel": False}):
        data.run(req, np.zeros(3))  # as tasks
        data.run(req, np.zeros(3))  # through client.run
    assert data.direct_passes == 1 and data._channel is None
    with dask.config.set({"daskgmm.pass_channel": "false"}):  # as DASK_DASKGMM__PASS_CHANNEL=false gives it
        data.run(req, np.zeros(3))
    assert data.direct_passes == 2 and data._channel is None
    data.run(req, np.zeros(3))
    assert data.direct_passes == 3 and data._channel is not None


def test_a_pass_opens_the_channel_once_its_workers_back_off_is_over(process_client, monkeypatch):
    """A long fit is not left without its channel for good by a worker busy at its first pass: a later pass
    tries again once the back-off is over, and the passes before it went through client.run at no cost."""
    now = [1000.0]
    monkeypatch.setattr(ch, "_clock", lambda: now[0])
    X = da.random.default_rng(0).standard_normal((4000, 3), chunks=1000)
    data = ChunkedData(process_client.persist(X), cache="memory")
    req = [MixtureRequest([ModelSpec(kmeans_natural_params(np.eye(3)), "spherical", "hard")])]
    data.run(req, np.zeros(3))  # as tasks
    ids = process_client.run(_worker_id)
    monkeypatch.setattr(ch, "_backoff", {t: (now[0] + 60, 60.0, ids[t]) for t, _ in data._batches})
    data.run(req, np.zeros(3))
    data.run(req, np.zeros(3))
    assert data.direct_passes == 2 and data._channel is None  # through client.run
    now[0] += 61
    data.run(req, np.zeros(3))
    assert data.direct_passes == 3 and data._channel is not None and not ch._backoff
    # a worker restarted at its address (another process) does not wait out the back-off of the one it replaced:
    # the pass through client.run learns its id, the next one opens the channel
    data._channel.close()
    data._channel = None
    monkeypatch.setattr(ch, "_backoff", {t: (now[0] + 60, 60.0, "Worker-gone") for t, _ in data._batches})
    data.run(req, np.zeros(3))
    assert data.direct_passes == 4 and data._channel is None
    data.run(req, np.zeros(3))
    assert data.direct_passes == 5 and data._channel is not None and not ch._backoff


async def _worker_id(dask_worker=None):
    return dask_worker.id


def test_opening_the_channel_and_the_call_share_one_bound(process_client, monkeypatch):
    """A worker frozen at the first direct pass holds the opening's client.run until the bound: the pass then
    runs as tasks, not after a second bound through client.run (every wait of a direct pass: one bound)."""
    import asyncio

    from daskgmm.engine import passes

    X = da.random.default_rng(0).standard_normal((4000, 3), chunks=1000)
    data = ChunkedData(process_client.persist(X), cache="memory")
    req = [MixtureRequest([ModelSpec(kmeans_natural_params(np.eye(3)), "spherical", "hard")])]
    ref = data.run(req, np.zeros(3))[0][0].n  # as tasks
    bound = 1.0
    monkeypatch.setattr(passes, "STALL_SECONDS", bound)
    data._slowest = 1e-3  # the bound: STALL_SECONDS + 0.01 s

    def frozen_open(cls, client, workers, timeout):
        time.sleep(0.8 * timeout)  # the serve call waited most of the bound, then failed
        return None

    async def frozen_run(client, workers, function, *args):
        await asyncio.sleep(30)

    monkeypatch.setattr(ch.Channel, "open", classmethod(frozen_open))
    monkeypatch.setattr(passes, "_run_on_workers", frozen_run)
    t0 = time.monotonic()
    np.testing.assert_array_equal(data.run(req, np.zeros(3))[0][0].n, ref)
    assert time.monotonic() - t0 < 1.5 * bound  # 1.8 bounds when the call got a bound of its own
    assert not data.direct and data.direct_passes == 0


async def _worker_end_keepalive(dask_worker=None):
    """The worker's end of the connection this call came over (it runs inside the connection's handler)."""
    import asyncio

    writer = asyncio.current_task().get_coro().cr_frame.f_locals["writer"]
    sock = writer.get_extra_info("socket")
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), sock.getsockopt(
        socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", socket.SO_KEEPALIVE))


def test_both_ends_see_a_vanished_peer(process_client):
    """TCP keepalive of ~30 s on both ends: the worker's end idles in a read between passes, and a client host
    that vanished without a FIN would hold its connection, task and key for good."""
    key = secrets.token_bytes(32)
    _, where = _listen(process_client, key)
    c = ch.Channel({"w": _connect(where, key)})
    try:
        mine = c._socks["w"]
        assert mine.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        (theirs,) = c.call(_worker_end_keepalive, (), timeout=10).values()
        assert theirs[0]
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert theirs[1] == ch.KEEPALIVE[0] == mine.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
    finally:
        c.close()
