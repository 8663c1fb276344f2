"""Connections of the front door: a deadline for a request's line and headers.

aiohttp closes a connection that sends nothing for its keep-alive timeout, but a client that
trickles header bytes keeps it open indefinitely. Here the clock starts at a request's first
byte; if the headers are not complete within `requestHeadersTimeout` the client gets 408 and the
connection is closed. The body has its own deadline (http/body.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

KEEPALIVE_TIMEOUT = 75.0  # aiohttp's default for web applications
_TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class HeaderDeadlineHandler(RequestHandler):
    """aiohttp's connection handler plus the header deadline.

    Reads two attributes of aiohttp's handler: `_messages` (parsed requests not yet handled) and
    `_request_in_progress` (a handler is running); together they tell "between requests"."""

    def __init__(self, manager: Any, *, headers_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._headers_timeout = headers_timeout
        self._headers_deadline: asyncio.TimerHandle | None = None

    def _between_requests(self) -> bool:
        return not self._request_in_progress and not self._messages

    def data_received(self, data: bytes) -> None:
        between = self._between_requests()
        super().data_received(data)
        if between and not self._messages:
            # Part of a request's head arrived (headers that come whole set no timer at all).
            if self._headers_deadline is None:
                self._headers_deadline = self._loop.call_later(self._headers_timeout, self._headers_expired)
        elif self._headers_deadline is not None:
            self._disarm()

    def _disarm(self) -> None:
        if self._headers_deadline is not None:
            self._headers_deadline.cancel()
            self._headers_deadline = None

    def _headers_expired(self) -> None:
        self._headers_deadline = None
        if not self._between_requests() or self.transport is None:
            return
        self.transport.write(_TIMED_OUT)
        self.force_close()
        self.transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)


class FrontDoorRunner(web.AppRunner):
    """An AppRunner whose connections are HeaderDeadlineHandlers; `handler_options` are aiohttp's
    connection options (access_log, access_log_class, keepalive_timeout, ...)."""

    def __init__(self, app: web.Application, headers_timeout: float, **handler_options: Any) -> None:
        options = {"access_log": None, "keepalive_timeout": KEEPALIVE_TIMEOUT, **handler_options}
        super().__init__(app, handle_signals=False, **options)
        self._headers_timeout = headers_timeout
        self._handler_options = options

    @property
    def server(self) -> Any:
        manager = super().server
        if manager is None:
            return None
        loop = asyncio.get_running_loop()
        headers_timeout, options = self._headers_timeout, self._handler_options

        def connection() -> HeaderDeadlineHandler:
            return HeaderDeadlineHandler(manager, loop=loop, headers_timeout=headers_timeout, **options)

        return connection
