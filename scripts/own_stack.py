"""A benchmark's own stack: the whole dev stack on free ports in a temporary folder, its logs' tails shown
if the benchmark fails, everything stopped and removed afterwards."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from dev.stack import DevStack, Ports
from kit.settings import Settings


@asynccontextmanager
async def own_stack(prefix: str, env: Mapping[str, str] | None = None) -> AsyncIterator[tuple[DevStack, Path]]:
    """Yields the started stack and its folder. The developer's settings variables do not reach it."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    # Registered before the stack exists, so it runs after the embedded PostgreSQL's own exit handler.
    # (DevStack.stop() has stopped PostgreSQL by then; that handler may still log "Failed to stop server".)
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    settings_vars = {name.upper() for name in Settings.model_fields}
    clean = {k: v for k, v in os.environ.items() if k.upper() not in settings_vars}
    stack = DevStack(
        data_dir=root / "data",
        ports=Ports.free(),
        env=clean | {"LOG_FORMAT": "json"} | dict(env or {}),
        log_dir=root / "logs",
    )
    print(f"starting a stack in {root} ...", flush=True)
    started = time.perf_counter()
    try:
        await stack.start()
        print(f"stack up in {time.perf_counter() - started:.1f}s (API {stack.api_url})", flush=True)
        yield stack, root
    except BaseException:
        for log in sorted((root / "logs").glob("*.log")):
            print(f"--- {log.name} (last 20 lines)", file=sys.stderr)
            print("\n".join(log.read_text(errors="replace").splitlines()[-20:]), file=sys.stderr)
        raise
    finally:
        stack.stop()
