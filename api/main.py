"""Runs the API with uvicorn: `python -m api.main`."""

from __future__ import annotations

import uvicorn
from starlette.types import ASGIApp

from api.app import create_app
from api.edge import HeadDeadlineH11Protocol
from kit import metrics
from kit.logging import configure_logging
from kit.settings import Settings, get_settings


def main() -> None:
    settings = get_settings()
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    app = create_app(settings, graphiql=settings.api_graphiql)
    if settings.api_metrics_address:  # apart from the public port, as the worker's are
        metrics.serve_metrics(settings.api_metrics_address, metrics.API_REGISTRY)
    uvicorn.Server(server_config(app, settings)).run()


def server_config(app: ASGIApp, settings: Settings) -> uvicorn.Config:
    """uvicorn as the API runs it: our logging, no access log (the metrics count requests), and a deadline
    for each request's head (`api.edge`)."""
    return uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=False,
        http=HeadDeadlineH11Protocol.with_head_timeout(settings.api_header_timeout),
    )


if __name__ == "__main__":
    main()
