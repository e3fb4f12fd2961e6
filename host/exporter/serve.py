"""The HTTP endpoint: the cache, rendered by prometheus_client, served from a thread.

A scrape returns bytes already made: the library's exposition
(``generate_latest``, text or OpenMetrics as the scraper's Accept header asks,
gzipped when it accepts that) of :class:`~gagent.host.exporter.metrics.CacheCollector`,
rendered by a background thread after the cache changes (at most every
:data:`RENDER_GAP` seconds) for each format a scraper has asked for.  So a
scrape of a thousand domains costs a copy, not the ~100 ms of formatting them,
and never waits on the trio side, on libvirt or on a guest; what it returns is
at most a render behind the cache.
"""

from __future__ import annotations

import gzip
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from gagent.errors import UsageError

from .cache import ExporterCache
from .metrics import CacheCollector

__all__ = ["DEFAULT_LISTEN", "MetricsServer", "Renderer", "parse_listen", "start_server"]

DEFAULT_LISTEN = ":9851"
#: Seconds between two renders of a format (changes in between are rendered together).
RENDER_GAP = 0.5

Encoder = Callable[[CollectorRegistry], bytes]


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT``, ``:PORT`` (every address) or ``[IPv6]:PORT`` -> (address, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--listen {text!r}: want ADDR:PORT, like 127.0.0.1:9851 or :9851")
    host = host.removeprefix("[").removesuffix("]") or "0.0.0.0"
    return host, int(port)


def make_registry(cache: ExporterCache) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CacheCollector(cache))
    return registry


class Renderer:
    """The latest exposition of the cache in each format asked for, kept up to date."""

    def __init__(self, cache: ExporterCache, gap: float = RENDER_GAP) -> None:
        self.cache = cache
        self.registry = make_registry(cache)
        self.gap = gap
        self._lock = threading.Lock()
        #: (content type, gzipped) -> (encoder, cache version rendered, body)
        self._formats: dict[tuple[str, bool], tuple[Encoder, int, bytes]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresh, name="gagent-render", daemon=True)
        self._thread.start()

    def body(self, accept: str | None, accept_encoding: str | None) -> tuple[str, bool, bytes]:
        """(content type, gzipped, body) for a scraper's headers."""
        encoder, content_type = choose_encoder(accept or "")
        gzipped = "gzip" in (accept_encoding or "")
        key = (content_type, gzipped)
        with self._lock:
            known = self._formats.get(key)
        if known is None:  # the first scrape in this format renders it; the thread then keeps it
            known = self._render(key, encoder)
        return content_type, gzipped, known[2]

    def _render(self, key: tuple[str, bool], encoder: Encoder) -> tuple[Encoder, int, bytes]:
        version = self.cache.version  # read first: a change during the render renders again
        body = encoder(self.registry)
        if key[1]:
            body = gzip.compress(body, compresslevel=1)
        rendered = (encoder, version, body)
        with self._lock:
            self._formats[key] = rendered
        return rendered

    def _refresh(self) -> None:
        while not self._stop.wait(self.gap):
            version = self.cache.version
            with self._lock:
                behind = [(k, v[0]) for k, v in self._formats.items() if v[1] != version]
            for key, encoder in behind:
                self._render(key, encoder)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per scrape is noise in a service's log


def wsgi_app(renderer: Renderer):
    def app(environ: dict, start_response) -> Iterable[bytes]:
        content_type, gzipped, body = renderer.body(
            environ.get("HTTP_ACCEPT"), environ.get("HTTP_ACCEPT_ENCODING")
        )
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        if gzipped:
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", headers)
        return [body]

    return app


@dataclass
class MetricsServer:
    server: WSGIServer
    thread: threading.Thread
    renderer: Renderer

    @property
    def port(self) -> int:
        return self.server.server_port

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
        self.renderer.stop()


def start_server(cache: ExporterCache, address: str, port: int) -> MetricsServer:
    """Serve ``cache`` on address:port (port 0: a free one; see :attr:`MetricsServer.port`)."""
    renderer = Renderer(cache)
    server_class = _Server6 if ":" in address else _Server
    try:
        server = make_server(address, port, wsgi_app(renderer), server_class, _Quiet)
    except OSError as exc:
        renderer.stop()
        raise UsageError(
            f"cannot listen on {address}:{port}: {exc.strerror or exc} "
            "(another exporter running? choose another with --listen ADDR:PORT)"
        ) from None
    thread = threading.Thread(target=server.serve_forever, name="gagent-http", daemon=True)
    thread.start()
    return MetricsServer(server, thread, renderer)
