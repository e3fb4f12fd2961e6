"""The HTTP endpoint: the format the scraper asks for, gzip, and a body that follows the cache."""

from __future__ import annotations

import gzip
import time
import urllib.request

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families
from prometheus_client.parser import text_string_to_metric_families

from gagent.errors import UsageError
from gagent.host.exporter.cache import ExporterCache
from gagent.host.exporter.serve import parse_listen, start_server

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


@pytest.fixture
def served():
    cache = ExporterCache([("kvm1", "test:///default")])
    cache.set_listing("kvm1", [("vm1", "running", True, {})], now=1.0)
    server = start_server(cache, "127.0.0.1", 0)
    try:
        yield cache, f"http://127.0.0.1:{server.port}/metrics"
    finally:
        server.stop()


def fetch(url: str, **headers: str) -> tuple[dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as reply:
        return dict(reply.headers), reply.read()


def samples(text: str, parse=text_string_to_metric_families) -> dict[str, float]:
    return {s.name + str(sorted(s.labels.items())): s.value for f in parse(text) for s in f.samples}


def test_what_prometheus_asks_for_openmetrics_gzipped(served):
    _, url = served
    headers, body = fetch(url, Accept=PROMETHEUS_ACCEPT, **{"Accept-Encoding": "gzip"})
    assert headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    assert headers["Content-Encoding"] == "gzip"
    text = gzip.decompress(body).decode()
    assert text.endswith("# EOF\n")
    running = "gagent_domain_running[('domain', 'vm1'), ('hypervisor', 'kvm1')]"
    assert samples(text, om_families)[running] == 1


def test_the_classic_text_format_by_default(served):
    _, url = served
    headers, body = fetch(url)
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "Content-Encoding" not in headers
    assert 'gagent_hypervisor_up{hypervisor="kvm1"} 0.0' in body.decode()


def test_the_served_body_follows_the_cache(served):
    cache, url = served
    assert 'gagent_hypervisor_up{hypervisor="kvm1"} 0.0' in fetch(url)[1].decode()
    cache.set_up("kvm1", True)
    deadline = time.monotonic() + 30
    while 'gagent_hypervisor_up{hypervisor="kvm1"} 1.0' not in fetch(url)[1].decode():
        assert time.monotonic() < deadline, "the change never reached the served body"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        (":9851", ("0.0.0.0", 9851)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:9851", ("::1", 9851)),
    ],
)
def test_listen_addresses(text, parsed):
    assert parse_listen(text) == parsed


def test_a_bad_listen_address_is_a_usage_error():
    with pytest.raises(UsageError, match="want ADDR:PORT"):
        parse_listen("localhost")
