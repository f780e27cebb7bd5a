"""Small helpers the tests share: free ports, serving an ASGI app on loopback, a whole stack."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn

from dev.stack import DevStack, Ports, free_port
from kit.settings import Settings


@asynccontextmanager
async def running_app(app: object, port: int | None = None) -> AsyncIterator[str]:
    """Serve `app` with uvicorn on 127.0.0.1 for the duration of the block; yields its base URL."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


# Settings variables from the developer's shell must not point the suite at their services.
_SETTINGS_VARS = {name.upper() for name in Settings.model_fields}


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.upper() not in _SETTINGS_VARS}


@asynccontextmanager
async def running_stack(
    env: dict[str, str] | None = None, *, ports: Ports | None = None, persistent_temporal: bool = True
) -> AsyncIterator[DevStack]:
    """A whole DevStack on free ports in its own temporary folder (not pytest's, which another pytest
    run beside us may prune); its child logs are printed if it fails to start."""
    root = Path(tempfile.mkdtemp(prefix="customer-lifecycle-test-"))
    dev = DevStack(
        data_dir=root / "data",
        ports=ports or Ports.free(),
        env=clean_env() | {"LOG_FORMAT": "json"} | (env or {}),
        log_dir=root / "logs",
        persistent_temporal=persistent_temporal,
    )
    try:
        try:
            await dev.start()
        except BaseException:
            _print_logs(root / "logs")
            raise
        yield dev
    finally:
        dev.stop()
        shutil.rmtree(root, ignore_errors=True)


def _print_logs(log_dir: Path) -> None:
    for log in sorted(log_dir.glob("*.log")):
        print(f"--- {log.name} (last 40 lines)")
        print("\n".join(log.read_text(errors="replace").splitlines()[-40:]))
