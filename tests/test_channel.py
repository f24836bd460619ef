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


def _listen(client, key):
    (worker,) = sorted(client.scheduler_info()["workers"])[:1]
    (where,) = client.run(ch.serve, key, workers=[worker]).values()
    return worker, tuple(where)


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
    sock = ch.Channel._connect(where, key)
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
            ch.Channel._connect(server.getsockname(), key)
        t.join(5)
        assert seen and key not in seen[0]


def test_a_call_that_raises_or_outlives_its_bound_closes_the_channel(process_client):
    key = secrets.token_bytes(32)
    _, where = _listen(process_client, key)
    c = ch.Channel({"w": ch.Channel._connect(where, key)})
    with pytest.raises(ch.ChannelError, match="no such chunk"):
        c.call(_raises, (), timeout=10)
    assert not c.workers
    with pytest.raises(ch.ChannelError, match="closed"):
        c.call(_where, (), timeout=10)
    key = secrets.token_bytes(32)
    _, where = _listen(process_client, key)
    c = ch.Channel({"w": ch.Channel._connect(where, key)})
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
        ch.Channel._connect(("127.0.0.1", port), b"k" * 32)
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


def test_a_worker_not_reached_is_not_tried_again(monkeypatch):
    """Connecting costs up to CONNECT_SECONDS where a firewall drops the packets: a worker this process
    could not reach gets no channel again (its passes go through client.run)."""
    monkeypatch.setattr(ch, "_unreachable", set())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    calls = []

    class Client:
        def run(self, fn, *args, workers, **kwargs):
            calls.append(workers)
            return {w: ("127.0.0.1", port) for w in workers}

    assert ch.Channel.open(Client(), ["tcp://127.0.0.1:9"], timeout=5) is None
    assert ch._unreachable == {"tcp://127.0.0.1:9"} and len(calls) == 1
    assert ch.Channel.open(Client(), ["tcp://127.0.0.1:9"], timeout=5) is None
    assert len(calls) == 1


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
    c = ch.Channel({"w": ch.Channel._connect(where, key)})
    try:
        mine = c._socks["w"]
        assert mine.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        (theirs,) = c.call(_worker_end_keepalive, (), timeout=10).values()
        assert theirs[0]
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert theirs[1] == ch.KEEPALIVE[0] == mine.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
    finally:
        c.close()
