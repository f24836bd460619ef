"""A real S3 HTTP API for the tests: moto's server on 127.0.0.1, in a thread of the test process.

Every request goes through :meth:`S3Server._wsgi`, where a test can set a *trap*: the n-th
request matching a method and a key prefix (optionally only copies) is held until the
test releases it, then refused with a 503, never reaching the store. A test holds a job
exactly at a step of its commit this way (and kills it there), with no hook in daskgmm.
A trap may instead answer at once, e.g. ``403 AccessDenied`` as S3 does to a prefix a
policy does not let one write (moto does not enforce bucket policies).
"""

from __future__ import annotations

import threading
import time
import urllib.parse

#: Credentials moto accepts (any would do); never real ones.
KEY, SECRET = "daskgmm-test-key", "daskgmm-test-secret"


ACCESS_DENIED = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
                 b"<Message>Access Denied</Message></Error>")


class Trap:
    def __init__(self, method, prefix, copy, nth, times, hold, status, body, silence=False):
        self.method, self.prefix, self.copy, self.nth = method, prefix, copy, nth
        self.times, self.hold, self.status, self.body = times, hold, status, body
        self.silence = silence
        self.at = None  # time.monotonic() when first sprung
        self.held = 0  # requests it caught (with silence: every request from then on)
        self.seen = 0
        self.hit = threading.Event()
        self.release = threading.Event()
        self.requests: list = []

    def matches(self, environ) -> bool:
        path = urllib.parse.unquote(environ.get("PATH_INFO", "")).lstrip("/")
        if environ.get("REQUEST_METHOD") != self.method or not path.startswith(self.prefix):
            return False
        if self.copy and "HTTP_X_AMZ_COPY_SOURCE" not in environ:
            return False
        self.seen += 1
        if self.seen >= self.nth and (self.times is None or self.seen < self.nth + self.times):
            self.requests.append(path)
            return True
        return False


def _drain(environ):
    stream = environ.get("wsgi.input")
    if stream is None:
        return
    if environ.get("wsgi.input_terminated"):
        stream.read()
    elif environ.get("CONTENT_LENGTH", "").isdigit():
        stream.read(int(environ["CONTENT_LENGTH"]))


class S3Server:
    """moto's S3 on 127.0.0.1 on a free port; :meth:`close` stops it."""

    def __init__(self):
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        class Quiet(MotoRequestHandler):
            def log_request(self, *args, **kwargs):  # one line per request would drown the test output
                pass

        self.app = DomainDispatcherApplication(create_backend_app)
        self.traps: list[Trap] = []
        self._session = None  # botocore's, shared by the filesystems of fs()
        self._lock = threading.Lock()
        self._atomic = threading.Lock()
        self.server = make_server("127.0.0.1", 0, self._wsgi, threaded=True, request_handler=Quiet)
        self.port = self.server.server_port
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="moto-s3", daemon=True)
        self.thread.start()

    @property
    def storage_options(self) -> dict:
        """What ``--storage-options`` takes to reach this server (s3fs's options)."""
        return {"endpoint_url": self.endpoint, "key": KEY, "secret": SECRET}

    def env(self) -> dict:
        """The standard AWS variables that point botocore (hence s3fs) at this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

    def fs(self):
        """A fresh s3fs filesystem on this server (no cached listings), its own client made from the server's
        botocore session: a session of its own loaded botocore's service models again, ~0.3-0.5 s a call on a
        loaded host, which the S3 tests make a few hundred times."""
        import s3fs

        if self._session is None:
            from aiobotocore.session import AioSession

            self._session = AioSession()
        return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False, session=self._session,
                                 **self.storage_options)

    def trap(self, method, prefix, *, copy=False, nth=1, times=1, hold=True, status="503 Service Unavailable",
             body=b"", silence=False) -> Trap:
        """Catch the ``nth`` ``method`` request on a key starting with ``prefix`` ("bucket/key...")
        (and the ``times - 1`` after it; ``times=None``: all of them): hold it until released, then
        answer ``status`` (or answer at once with ``hold=False``); it never reaches the store.
        ``silence``: once it is sprung, every request is held so (a store that stopped answering)."""
        trap = Trap(method, prefix, copy, nth, times, hold, status, body, silence)
        with self._lock:
            self.traps.append(trap)
        return trap

    def clear_traps(self):
        with self._lock:
            traps, self.traps = self.traps, []
        for t in traps:
            t.release.set()

    def _wsgi(self, environ, start_response):
        with self._lock:
            sprung = next((t for t in self.traps if t.silence and t.hit.is_set()), None)
            sprung = sprung or next((t for t in self.traps if t.matches(environ)), None)
        if sprung is not None:
            _drain(environ)  # the connection stays usable for the client's next request
            sprung.at = sprung.at or time.monotonic()
            sprung.held += 1
            sprung.hit.set()
            if sprung.hold:
                sprung.release.wait(60)
            body = sprung.body
            start_response(sprung.status, [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
            return [body]
        if environ.get("REQUEST_METHOD") in ("PUT", "DELETE") and (
                "HTTP_IF_NONE_MATCH" in environ or "HTTP_IF_MATCH" in environ):
            # S3 applies a conditional write atomically; moto's threaded server checks, then writes
            with self._atomic:
                return list(self.app(environ, start_response))
        return self.app(environ, start_response)

    def close(self):
        self.clear_traps()
        self.server.shutdown()
        self.thread.join(timeout=10)
        self.server.server_close()
