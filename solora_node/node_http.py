"""The HTTP routes of the metrics port: `/metrics`, `/healthz` and the node page at `/`.

Served by prometheus-client's threaded WSGI server (the one `/metrics` always used), so
the page adds routes to the existing endpoint instead of a second HTTP stack. Only GET
and HEAD are answered; everything is read-only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every 15 s and page refreshes would flood the node's log."""


def node_http_app(registry: CollectorRegistry, page: Callable[[], str] | None) -> WsgiApp:
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            return _plain(start_response, "405 Method Not Allowed", "read-only: GET or HEAD\n")
        if path == "/metrics":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            return _plain(start_response, "200 OK", "ok\n")
        if path in ("/", "/index.html") and page is not None:
            body = page().encode("utf-8")
            start_response(
                "200 OK",
                [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store")],
            )
            return [body]
        return _plain(start_response, "404 Not Found", "not found; try /, /metrics or /healthz\n")

    return app


def _plain(start_response: StartResponse, status: str, text: str) -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
    return [text.encode()]


def start_http(host: str, port: int, app: WsgiApp) -> tuple[WSGIServer, threading.Thread]:
    """Serve `app` on (host, port) from a daemon thread; port 0 picks a free one."""
    import socket

    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]

    class Server(ThreadingWSGIServer):
        address_family = family

    server = make_server(host, port, app, Server, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return server, thread
