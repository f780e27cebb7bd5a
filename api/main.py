"""Runs the API with uvicorn: `python -m api.main`."""

from __future__ import annotations

import uvicorn

from api.app import create_app
from kit.logging import configure_logging
from kit.settings import get_settings


def main() -> None:
    settings = get_settings()
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    app = create_app(settings, graphiql=settings.api_graphiql)
    uvicorn.run(app, host=settings.api_host, port=settings.api_port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
