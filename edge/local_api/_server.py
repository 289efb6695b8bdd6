"""Serving the app with uvicorn inside the edge's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import uvicorn

from edge.config import LOCAL_API_USER, EdgeConfig, split_listen
from edge.local_api._app import create_app
from edge.local_api._site import LocalSite

__all__ = ["LocalApiServer", "base_url"]

log = logging.getLogger("fusebox.edge.local_api")


def base_url(config: EdgeConfig) -> str:
    """The URL a client on this machine uses to reach the local API."""
    host, port = split_listen(config.local_api.listen)
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


class LocalApiServer:
    """``serve()`` runs the app with uvicorn in the current event loop until
    cancelled. A port that cannot be bound is logged, and the rest of the edge
    runs on without its page. ``port`` tells where it listens (``:0`` picks)."""

    def __init__(self, site: LocalSite, listen: str) -> None:
        self.site = site
        self.listen = listen
        self.port: int | None = None
        self._server: uvicorn.Server | None = None

    @property
    def started(self) -> bool:
        """Whether uvicorn is up and answering."""
        return self._server is not None and self._server.started

    async def serve(self) -> None:
        """Listen on ``listen`` and answer until cancelled (then shut down within
        a few seconds); return at once, logged, if the port cannot be bound."""
        host, port = split_listen(self.listen)
        try:
            sock = socket.create_server(
                (host, port),
                family=socket.AF_INET6 if ":" in host else socket.AF_INET,
            )
        except OSError as exc:
            # deliberately not fatal (unlike metrics.listen): the page is a
            # convenience and readings do not depend on it
            log.error(
                "local api: cannot listen on %s (%s); the installer page is off, "
                "the rest of the edge runs on. To get the page: choose another "
                "[local_api] listen in the config, or stop the other process",
                self.listen,
                exc.strerror or exc,
            )
            return
        self.port = sock.getsockname()[1]
        server = self._server = uvicorn.Server(self._uvicorn_config())
        shown = f"[{host}]" if ":" in host else host
        log.info(
            "local api: installer page on http://%s:%d/ (%s)",
            shown,
            self.port,
            f"user {LOCAL_API_USER!r} and the local_api password"
            if self.site.config.local_api.password
            else "this machine only",
        )
        try:
            # the edge process owns the signals (one Ctrl-C stops every task),
            # so serve without uvicorn's own signal capture, like the cloud API
            await server._serve([sock])
        except asyncio.CancelledError:
            server.should_exit = True
            with contextlib.suppress(Exception):
                async with asyncio.timeout(3):
                    await server.shutdown([sock])
            raise
        finally:
            sock.close()

    def _uvicorn_config(self) -> uvicorn.Config:
        return uvicorn.Config(
            create_app(self.site),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
            server_header=False,
            # the client address is the socket's (Basic-auth throttling keys on
            # it): no X-Forwarded-For, not even from loopback (uvicorn's default)
            proxy_headers=False,
        )
