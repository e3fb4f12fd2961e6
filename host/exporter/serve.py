"""The HTTP endpoint: prometheus_client's WSGI server in a daemon thread.

The library negotiates the format from the scraper's Accept header (OpenMetrics
or the classic text format) and serves every path.  Its registry holds only
:class:`~gagent.host.exporter.metrics.CacheCollector`, which reads the cache:
a scrape never waits on the trio side, on libvirt or on a guest.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, start_wsgi_server

from gagent.errors import UsageError

from .cache import ExporterCache
from .metrics import CacheCollector

__all__ = ["DEFAULT_LISTEN", "MetricsServer", "parse_listen", "start_server"]

DEFAULT_LISTEN = ":9851"


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT``, ``:PORT`` (every address) or ``[IPv6]:PORT`` -> (address, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--listen {text!r}: want ADDR:PORT, like 127.0.0.1:9851 or :9851")
    host = host.removeprefix("[").removesuffix("]") or "0.0.0.0"
    return host, int(port)


@dataclass
class MetricsServer:
    server: object  # wsgiref's WSGIServer
    thread: threading.Thread
    registry: CollectorRegistry

    @property
    def port(self) -> int:
        return self.server.server_port  # type: ignore[attr-defined]

    def stop(self) -> None:
        self.server.shutdown()  # type: ignore[attr-defined]
        self.server.server_close()  # type: ignore[attr-defined]
        self.thread.join(5)


def make_registry(cache: ExporterCache) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CacheCollector(cache))
    return registry


def start_server(cache: ExporterCache, address: str, port: int) -> MetricsServer:
    """Serve ``cache`` on address:port (port 0: a free one; see :attr:`MetricsServer.port`)."""
    registry = make_registry(cache)
    try:
        server, thread = start_wsgi_server(port, addr=address, registry=registry)
    except OSError as exc:
        raise UsageError(
            f"cannot listen on {address}:{port}: {exc.strerror or exc} "
            "(another exporter running? choose another with --listen ADDR:PORT)"
        ) from None
    return MetricsServer(server, thread, registry)
