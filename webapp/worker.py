"""The gunicorn worker class: gunicorn's gevent worker, with deadlines for clients that stall.

A connection costs a greenlet, not a thread, so clients that send slowly cannot take every
worker's request slots (with the threaded worker, 12 of them left no slot for anyone else).
gunicorn already bounds the request line and headers (its keep-alive timeout); this class adds a
bound on each read or write (CLIENT_IDLE_TIMEOUT_S) and on the whole request (gunicorn's
`timeout`), and puts the security headers on the answers gunicorn writes itself (400, 414, 431).
"""

from __future__ import annotations

import socket

import gevent
from gunicorn import util
from gunicorn.workers.base_async import AsyncWorker
from gunicorn.workers.ggevent import GeventWorker

from webapp.security import HEADERS

# A client that sends (or reads) nothing for this long is cut off. Longer than the keep-alive
# timeout, which already bounds an idle connection between requests.
CLIENT_IDLE_TIMEOUT_S = 10.0


class RequestDeadline(BaseException):
    """A request (reading its body, or writing the answer) ran past the worker's deadline.

    A BaseException, like gevent.Timeout, so that Flask's handler for unexpected errors does not
    turn it into a 500 answer to a client that is not listening.
    """


class Worker(GeventWorker):
    """gevent worker with per-read and per-request deadlines; see the module docstring."""

    def init_process(self):
        """Before serving: gunicorn's own error answers get the security headers too."""
        util.write_error = write_error_with_headers
        super().init_process()

    def handle(self, listener, client, addr):
        """Serve one connection; every read and write on it times out after CLIENT_IDLE_TIMEOUT_S."""
        # GeventWorker.handle would make the socket fully blocking (no timeout); skip it.
        client.settimeout(CLIENT_IDLE_TIMEOUT_S)
        AsyncWorker.handle(self, listener, client, addr)

    def handle_request(self, listener_name, req, sock, addr):
        """Serve one request within `timeout` seconds, or close the connection."""
        # gevent raises the deadline only where the request waits on the network (reading the body,
        # writing the answer), never in the middle of decoding or inference.
        try:
            with gevent.Timeout(self.cfg.timeout, RequestDeadline):
                return super().handle_request(listener_name, req, sock, addr)
        except (RequestDeadline, TimeoutError):
            self.log.info("closed a connection from %s: its request ran past the deadline", addr[0])
            raise StopIteration() from None
        finally:
            # Decoding and inference never yield, and reading a keep-alive client's next request
            # does not when it has already arrived: without this, one busy connection could keep
            # the worker while the others wait (p99 over 1 s at concurrency 16).
            gevent.sleep(0)


def write_error_with_headers(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's plain error answer (a malformed request, a line or header too long), with headers."""
    body = f"<html><head><title>{reason}</title></head><body><h1>{reason}</h1></body></html>"
    headers = {
        **HEADERS,
        "Connection": "close",
        "Content-Type": "text/html; charset=utf-8",
        "Cache-Control": "no-store",
        "Content-Length": str(len(body)),
    }
    head = f"HTTP/1.1 {status_int} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    util.write_nonblock(sock, (head + "\r\n" + body).encode("latin-1"))
