"""Fixtures for the data tests: the real benchmark mirror (`data_*`) and a real local HTTP server (`http_*`)."""

from __future__ import annotations

import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit

import pytest
from mirror import MIRROR


Route = Callable[[BaseHTTPRequestHandler, int], None]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Integration tests first (stable otherwise): under `make test` (xdist, one file per worker, collection
    order kept) a worker starts on the pipeline workspace at once while the other runs the many fast files,
    instead of the slowest file starting last and running alone."""
    items.sort(key=lambda item: item.get_closest_marker("integration") is None)


@pytest.fixture(scope="session")
def data_mirror() -> Path:
    """The read-only benchmark mirror: $KEPITFALLS_MIRROR, else ../shared/benchmarks beside the repo."""
    if not (MIRROR / "SHA256SUMS").is_file():
        pytest.skip(f"no benchmark mirror at {MIRROR} (set KEPITFALLS_MIRROR)")
    return MIRROR


class LocalServer:
    """An http.server on 127.0.0.1 whose paths answer with test-supplied routes; counts hits per path."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: Counter[str] = Counter()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                owner.hits[path] += 1
                route = owner.routes.get(path)
                if route is None:
                    self.send_error(404)
                else:
                    route(self, owner.hits[path])

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def http_server() -> Iterator[LocalServer]:
    server = LocalServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
