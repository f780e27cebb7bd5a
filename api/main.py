"""Runs the API with uvicorn: `python -m api.main`, in `API_WORKERS` processes sharing one socket.

One process serves as it is; several are forked from this one after it bound the port (before any
event loop, thread or connection exists), each with its own pool and Temporal client. This
process then only supervises: a worker that exits is started again, unless it failed during its start
(an error status within STARTUP_GRACE_SECONDS: a configuration fault would only repeat), which stops
them all; a worker killed by a signal (the OOM killer, an operator) is always started again. SIGTERM or
SIGINT stops them all.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import time
from types import FrameType

import structlog
import uvicorn
from starlette.types import ASGIApp

from api.app import create_app
from api.edge import HeadDeadlineHttpToolsProtocol
from kit import metrics
from kit.logging import configure_logging
from kit.settings import Settings, get_settings

log = structlog.get_logger("api.main")

# A worker that fails sooner than this after its start is a fault of the configuration, not of the moment.
STARTUP_GRACE_SECONDS = 10.0


def main() -> None:
    settings = get_settings()
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    if settings.api_workers == 1:
        serve(settings, index=0)
    else:
        raise SystemExit(supervise(settings))


def serve(settings: Settings, *, index: int, sockets: list[socket.socket] | None = None) -> None:
    """One API process: the app, its metrics (apart from the public port, as the worker's are) and uvicorn."""
    app = create_app(settings, graphiql=settings.api_graphiql)
    # Everything imported and built so far lives as long as the process: out of the collector's sight, so a
    # full collection does not walk it again and again while requests wait.
    gc.freeze()
    if settings.api_metrics_address:
        metrics.serve_metrics(metrics_address(settings.api_metrics_address, index), metrics.API_REGISTRY)
    uvicorn.Server(server_config(app, settings)).run(sockets=sockets)


def metrics_address(address: str, index: int) -> str:
    """API process `index` serves its metrics on the configured port + index (one scrape target each)."""
    host, port = metrics.split_address(address)
    return f"[{host}]:{port + index}" if ":" in host else f"{host}:{port + index}"


KEEP_ALIVE_SECONDS = 30


def server_config(app: ASGIApp, settings: Settings) -> uvicorn.Config:
    """uvicorn as the API runs it: uvloop, httptools (with a deadline for each request's head, `api.edge`),
    our logging, and no access log (the metrics count requests)."""
    return uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=False,
        loop="uvloop",
        http=HeadDeadlineHttpToolsProtocol.with_head_timeout(settings.api_header_timeout),
        backlog=4096,
        # Longer than clients keep an idle connection (httpx 5 s, uvicorn's own default too): with equal
        # timeouts a client may send on a connection the server is closing, and gets a reset, not an answer.
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )


def supervise(settings: Settings) -> int:
    """Binds the port, forks `API_WORKERS` processes onto it and keeps them running; the exit status."""
    # A config only to bind the socket as uvicorn would (its app is never loaded).
    listener = uvicorn.Config(
        "api.app:create_app", host=settings.api_host, port=settings.api_port, backlog=4096
    ).bind_socket()
    children: dict[int, tuple[int, float]] = {}  # pid -> (index, started at)
    stopping = False

    def start(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the child: serve until told to stop, never return into the supervisor's loop
            status = 0
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                serve(settings, index=index, sockets=[listener])
            except BaseException:  # noqa: BLE001  (logged; the supervisor sees the status)
                log.exception("api worker failed", worker=index)
                status = 1
            os._exit(status)
        children[pid] = (index, time.monotonic())

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            _signal(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for index in range(settings.api_workers):
        start(index)
    log.info("api started", workers=settings.api_workers, host=settings.api_host, port=settings.api_port)
    status = 0
    while children:
        pid, wait_status = os.wait()
        if pid not in children:
            continue
        index, started = children.pop(pid)
        if stopping:
            continue
        code = os.waitstatus_to_exitcode(wait_status)  # negative: the signal that killed it
        if code > 0 and time.monotonic() - started < STARTUP_GRACE_SECONDS:
            log.error("api worker exited during its start; stopping the api", worker=index, exit_code=code)
            status = 1
            stop(signal.SIGTERM, None)
            continue
        log.warning("api worker exited; starting it again", worker=index, exit_code=code)
        start(index)
    listener.close()
    return status


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


if __name__ == "__main__":
    main()
