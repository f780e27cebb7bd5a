"""Headless Chromium for browser tests: Debian's `chromium` package, driven by Playwright.

Playwright's own browser download (`playwright install`) cannot work on these machines, so the tests
use /usr/bin/chromium and install it with apt when it is missing (CI runs as root, without stdin).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import BrowserContext, async_playwright

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps dialling Google's hosts, which this network refuses.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
APT_TIMEOUT_SECONDS = 900


class ChromiumUnavailable(RuntimeError):
    """Debian's chromium is not installed and could not be installed."""


def ensure_chromium() -> Path:
    """/usr/bin/chromium, installed from Debian's `chromium` package first if it is missing."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    if os.geteuid() != 0:
        raise ChromiumUnavailable(
            f"{CHROMIUM} is missing and only root can install it: run `sudo apt-get install -y chromium`"
        )
    if shutil.which("apt-get") is None:
        raise ChromiumUnavailable(f"{CHROMIUM} is missing and there is no apt-get to install Debian's chromium package")
    _apt("apt-get", "update")
    policy = _apt("apt-cache", "policy", "chromium")
    if "Candidate:" not in policy or "Candidate: (none)" in policy:
        raise ChromiumUnavailable(f"apt knows no installable `chromium` package after apt-get update:\n{policy}")
    _apt("apt-get", "install", "-y", "--no-install-recommends", "chromium")
    if not os.access(CHROMIUM, os.X_OK):
        raise ChromiumUnavailable(f"`apt-get install chromium` succeeded but {CHROMIUM} is still missing")
    return CHROMIUM


def _apt(*command: str) -> str:
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    try:
        done = subprocess.run(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=APT_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ChromiumUnavailable(f"installing chromium: `{' '.join(command)}` failed: {exc}") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise ChromiumUnavailable(f"installing chromium: `{' '.join(command)}` exited with {done.returncode}:\n{tail}")
    return done.stdout


@asynccontextmanager
async def chromium_context(executable: Path, user_data_dir: Path) -> AsyncIterator[BrowserContext]:
    """A headless Chromium with a fresh profile in `user_data_dir`; closed (and the browser ended) on exit."""
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(user_data_dir),
            executable_path=str(executable),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1600, "height": 1000},
        )
        try:
            yield context
        finally:
            await context.close()
