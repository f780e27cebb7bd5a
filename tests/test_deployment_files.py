"""The deployment files agree with the code: docker-compose.yml, Dockerfile and .dockerignore.

No container engine is needed: the files are parsed and compared with Settings, the realm export,
the package layout and the modules the containers run. Each test names the inconsistency it catches.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import posixpath
import re
import shlex
from fnmatch import fnmatch
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

import db.pool
from kit.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
APP_SERVICES = ("api", "worker")
SETTINGS_VARS = {name.upper() for name in Settings.model_fields}
# The module each application service runs.
SERVICE_MODULES = {"api": "api.main", "worker": "workers.main"}
REQUIRED_INTERPOLATION = re.compile(r"\$\{(?P<var>[A-Za-z_][A-Za-z0-9_]*):\?[^}]*\}")
INTERPOLATION = re.compile(r"\$\{(?P<var>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
SECRET_NAME = re.compile(r"(SECRET|PASSWORD|PWD|TOKEN|_KEY)$")
KEYCLOAK_IMPORT_DIR = "/opt/keycloak/data/import"


# --- loading -----------------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """Docker Compose rejects a key given twice in one mapping; PyYAML would silently keep the last."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [
            key.value for key, _ in node.value if isinstance(key, yaml.ScalarNode) and not key.tag.endswith(":merge")
        ]
        duplicates = {key for key in keys if keys.count(key) > 1}
        if duplicates:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate keys {sorted(duplicates)}", node.start_mark)
        return super().construct_mapping(node, deep=deep)


@cache
def compose() -> dict[str, Any]:
    data = yaml.load(COMPOSE_FILE.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), "docker-compose.yml has no services"
    return data


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def service(name: str) -> dict[str, Any]:
    assert name in services(), f"docker-compose.yml defines no `{name}` service"
    return services()[name]


def raw_env(name: str) -> dict[str, str]:
    """A service's environment as written (before interpolation); list or mapping syntax."""
    env = service(name).get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        return {key: value for key, value in pairs}
    return {
        key: "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        for key, value in env.items()
    }


def interpolate(value: str) -> str:
    """Compose interpolation with an empty shell: defaults apply, required variables get a stand-in."""

    def substitute(match: re.Match[str]) -> str:
        op, arg = match["op"], match["arg"]
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            return f"required-{match['var'].lower()}"
        return ""

    return INTERPOLATION.sub(substitute, value.replace("$$", "\0")).replace("\0", "$")


def env(name: str) -> dict[str, str]:
    return {key: interpolate(value) for key, value in raw_env(name).items()}


def command(name: str) -> list[str]:
    cmd = service(name).get("command")
    if cmd is None:
        return dockerfile_cmd() if "build" in service(name) else []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(part) for part in cmd]


def ports(name: str) -> list[tuple[int, int]]:
    """(published, container) pairs from short or long port syntax."""
    pairs: list[tuple[int, int]] = []
    for entry in service(name).get("ports") or []:
        if isinstance(entry, dict):
            pairs.append((int(entry["published"]), int(entry["target"])))
            continue
        parts = str(entry).split("/")[0].split(":")
        assert len(parts) >= 2, f"{name}: port {entry!r} is not published on a fixed host port"
        pairs.append((int(parts[-2]), int(parts[-1])))
    return pairs


def healthcheck(name: str) -> dict[str, Any] | None:
    """The effective healthcheck: the service's own, else the Dockerfile's for built services."""
    check = service(name).get("healthcheck")
    if check is not None:
        return None if check.get("disable") or check.get("test") in (["NONE"], "NONE") else check
    if "build" in service(name):
        return {"test": ["CMD", *dockerfile_healthcheck_cmd()]}
    return None


@cache
def realm() -> dict[str, Any]:
    from dev.emulators.keycloak import DEFAULT_REALM_FILE

    return json.loads(Path(DEFAULT_REALM_FILE).read_text())


# --- Dockerfile --------------------------------------------------------------------------------------


@cache
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, args = current.strip().partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        current = ""
    assert not current, "Dockerfile ends inside a line continuation"
    return instructions


def dockerfile_args(keyword: str) -> list[str]:
    return [args for kw, args in dockerfile() if kw == keyword]


def dockerfile_env() -> dict[str, str]:
    values: dict[str, str] = {}
    for args in dockerfile_args("ENV"):
        for token in shlex.split(args):
            assert "=" in token, f"Dockerfile: use ENV KEY=VALUE, not {args!r}"
            key, _, value = token.partition("=")
            values[key] = value
    return values


def exec_form(args: str, what: str) -> list[str]:
    assert args.startswith("["), f"Dockerfile {what} must use the exec (JSON) form, got {args!r}"
    return [str(part) for part in json.loads(args)]


def dockerfile_cmd() -> list[str]:
    cmds = dockerfile_args("CMD")
    assert cmds, "Dockerfile has no CMD"
    return exec_form(cmds[-1], "CMD")


def dockerfile_healthcheck_cmd() -> list[str]:
    checks = dockerfile_args("HEALTHCHECK")
    assert checks, "Dockerfile has no HEALTHCHECK"
    _, sep, rest = checks[-1].partition("CMD ")
    assert sep, f"Dockerfile HEALTHCHECK has no CMD: {checks[-1]!r}"
    return exec_form(rest.strip(), "HEALTHCHECK CMD")


def dockerignore_patterns() -> list[str]:
    if not DOCKERIGNORE.exists():
        return []
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line.rstrip("/") for line in lines if line and not line.startswith("#")]


def in_build_context(relative: str) -> bool:
    """Whether .dockerignore lets a repository path into the build context (last matching rule wins)."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]  # the path and its parents
    included = True
    for pattern in dockerignore_patterns():
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.lstrip("/")
        variants = {body, body[3:]} if body.startswith("**/") else {body}
        if any(fnmatch(candidate, variant) for candidate in candidates for variant in variants):
            included = negate
    return included


def image_copies() -> dict[str, str]:
    """Repository path -> image path for every COPY/ADD from the build context (relative to WORKDIR)."""
    workdir = "/"
    mapping: dict[str, str] = {}
    for keyword, args in dockerfile():
        if keyword == "WORKDIR":
            workdir = posixpath.normpath(args if args.startswith("/") else f"{workdir}/{args}")
        if keyword not in ("COPY", "ADD"):
            continue
        flags = re.match(r"((?:--\S+\s+)*)(.*)", args)
        assert flags is not None
        if "--from" in flags[1]:  # from another stage or image, not from the build context
            continue
        rest = flags[2]
        *sources, dest = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
        dest_abs = posixpath.normpath(dest if dest.startswith("/") else f"{workdir}/{dest}")
        dest = dest_abs + "/" if dest.endswith("/") else dest
        for source in sources:
            source = source.strip("/").removeprefix("./") or "."
            if source == "." or (REPO_ROOT / source).is_dir():  # a directory's *contents* land in dest
                mapping[source] = dest_abs.rstrip("/") or "/"
            elif dest.endswith("/") or len(sources) > 1:
                mapping[source] = f"{dest_abs.rstrip('/')}/{Path(source).name}"
            else:
                mapping[source] = dest_abs
    return mapping


def image_path(relative: str) -> str | None:
    """Where a repository path lands in the image, if it is copied and not excluded by .dockerignore."""
    if not in_build_context(relative):
        return None
    for source, dest in image_copies().items():
        if source == ".":
            return f"{dest.rstrip('/')}/{relative}"
        if relative == source or relative.startswith(source + "/"):
            return dest + relative[len(source) :]
    return None


# --- settings a process reads ------------------------------------------------------------------------


SETTINGS_ATTRIBUTE = re.compile(r"(?<![A-Za-z0-9])_?settings\.([a-z_][a-z0-9_]*)")
# The packages whose code runs in each process (the shared packages count through the functions of
# theirs that a process calls with its Settings).
PROCESS_PACKAGES = {"api": ("api",), "worker": ("workers", "activities", "workflows")}
SHARED_PACKAGES = ("domain", "integrations", "db", "kit")  # dev/ never runs in production


def _fields_in(source: str) -> set[str]:
    """Settings fields read as `settings.x` in some source; a property or method counts as the fields it uses."""
    fields: set[str] = set()
    for name in SETTINGS_ATTRIBUTE.findall(source):
        attribute = inspect.getattr_static(Settings, name, None)
        if name in Settings.model_fields:
            fields.add(name)
        elif isinstance(attribute, property):  # e.g. keycloak_issuer
            fields |= _fields_in(inspect.getsource(attribute.fget).replace("self.", "settings."))
        elif inspect.isfunction(attribute):  # e.g. sumsub_level_name(...)
            fields |= _fields_in(inspect.getsource(attribute).replace("self.", "settings."))
    return fields


def _shared_settings_functions() -> dict[str, set[str]]:
    """Functions of the shared packages that take a Settings argument -> the fields they read."""
    functions: dict[str, set[str]] = {}
    for path in sorted(path for package in SHARED_PACKAGES for path in (REPO_ROOT / package).rglob("*.py")):
        if path.name == "settings.py":  # the definition itself
            continue
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
                if any(arg.annotation is not None and "Settings" in ast.unparse(arg.annotation) for arg in args):
                    functions[node.name] = _fields_in(ast.get_source_segment(source, node) or "")
    return functions


def settings_read_by(process: str) -> set[str]:
    """Settings fields a process reads: in its own packages, and through the shared functions it calls."""
    sources = [
        path.read_text() for package in PROCESS_PACKAGES[process] for path in (REPO_ROOT / package).rglob("*.py")
    ]
    fields: set[str] = set()
    shared = _shared_settings_functions()
    for source in sources:
        fields |= _fields_in(source)
        for function, used in shared.items():
            if re.search(rf"\b{re.escape(function)}\(", source):
                fields |= used
    return fields


def dev_only_default(field: str) -> bool:
    """A default that only works on a developer's machine: unset, a loopback URL, or a dev secret."""
    default = Settings.model_fields[field].default
    if default is None:
        return True
    text = str(default).lower()
    return any(marker in text for marker in ("127.0.0.1", "localhost", "dev", "sbx:"))


def effective_env(name: str) -> dict[str, str]:
    """What the process sees: the image's ENV overridden by the service's environment."""
    return {**dockerfile_env(), **env(name)} if "build" in service(name) else env(name)


# --- compose: services and emulators -------------------------------------------------------------------


def test_the_production_topology_is_complete() -> None:
    assert {"postgres", "temporal", "temporal-ui", "keycloak", "api", "worker"} <= set(services())


def test_no_emulator_or_dev_server_runs_in_production() -> None:
    for name, svc in services().items():
        text = " ".join([name, str(svc.get("image", "")), *command(name)])
        assert "emulator" not in text.lower(), f"{name} runs an emulator"
        assert not any(part.startswith(("dev.", "emulators")) for part in command(name)), (
            f"{name} runs an emulator module"
        )
        assert "start-dev" not in command(name) or name == "keycloak", f"{name} runs a development server"
    assert str(service("keycloak")["image"]).startswith("quay.io/keycloak/keycloak:26"), (
        "Keycloak must be the real server"
    )
    assert str(service("temporal")["image"]).startswith(("temporalio/auto-setup:", "temporalio/server:"))
    for name in APP_SERVICES:
        for key, value in env(name).items():
            if key.endswith(("_URL", "_ADDRESS")) and key != "DATABASE_URL":
                host = urlsplit(value if "//" in value else f"//{value}").hostname
                assert host not in ("127.0.0.1", "localhost"), f"{name}: {key}={value} points at the container itself"
    assert env("worker").get("SUMSUB_BASE_URL") == "https://api.sumsub.com", "the worker must call the real Sumsub"


# --- compose: environment vs Settings ------------------------------------------------------------------


@pytest.mark.parametrize("name", APP_SERVICES)
def test_every_application_variable_is_a_settings_field(name: str) -> None:
    unknown = set(raw_env(name)) - SETTINGS_VARS
    # Settings ignores unknown variables (extra="ignore"), so a typo here would silently do nothing.
    assert not unknown, f"{name}: not Settings fields (kit/settings.py): {sorted(unknown)}"


def test_dockerfile_env_names_are_settings_fields_or_python_runtime() -> None:
    runtime = {"PATH", "PYTHONPATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONFAULTHANDLER"}
    for key in dockerfile_env():
        assert key in SETTINGS_VARS or key in runtime or key.startswith("PIP_"), (
            f"Dockerfile ENV {key} is not read by anything"
        )


@pytest.mark.parametrize("name", APP_SERVICES)
def test_every_setting_the_process_reads_with_a_dev_only_default_is_set(name: str) -> None:
    read = settings_read_by(name)
    assert read, f"found no settings read by the {name} process"
    missing = sorted(f.upper() for f in read if dev_only_default(f) and f.upper() not in effective_env(name))
    assert not missing, f"{name} would run with development defaults for {missing}"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_no_unread_setting_is_passed(name: str) -> None:
    """Least privilege: a process only gets the settings (and secrets) its code reads."""
    read = {f.upper() for f in settings_read_by(name)}
    extra = sorted(set(raw_env(name)) - read)
    assert not extra, f"{name} is given settings its code never reads: {extra}"


def test_secrets_are_required_interpolations_never_literals() -> None:
    for name in services():
        for key, value in raw_env(name).items():
            if SECRET_NAME.search(key) and value not in ("true", "false"):  # not flags like ..._PASS_ACCESS_TOKEN
                assert REQUIRED_INTERPOLATION.fullmatch(value), f"{name}: {key} must be ${{VAR:?...}}, not {value!r}"
    for name in APP_SERVICES:
        userinfo = (
            raw_env(name)["DATABASE_URL"].partition("://")[2].rpartition("@")[0]
        )  # before parsing: `:?` is not a query
        password = INTERPOLATION.sub("", userinfo).partition(":")[2]
        assert REQUIRED_INTERPOLATION.search(userinfo) and not password, (
            f"{name}: DATABASE_URL's password must be ${{VAR:?...}}"
        )
    text = COMPOSE_FILE.read_text()
    for client in realm().get("clients", []):
        if client.get("secret"):
            assert client["secret"] not in text, (
                f"the realm's dev secret of `{client['clientId']}` is in docker-compose.yml"
            )


# --- compose: wiring between services --------------------------------------------------------------------


def test_database_url_points_at_the_app_database_on_the_postgres_service() -> None:
    pg = env("postgres")
    temporal = env("temporal")
    for name in APP_SERVICES:
        url = urlsplit(env(name)["DATABASE_URL"])
        assert url.scheme in ("postgresql", "postgres")
        assert url.hostname == "postgres" and (url.port or 5432) == 5432
        assert url.username == pg.get("POSTGRES_USER", "postgres")
        assert url.password == pg["POSTGRES_PASSWORD"], "DATABASE_URL and POSTGRES_PASSWORD differ"
        database = url.path.lstrip("/")
        assert database == pg.get("POSTGRES_DB", url.username), f"{name}: database {database!r} is never created"
        assert database not in (
            temporal.get("DBNAME", "temporal"),
            temporal.get("VISIBILITY_DBNAME", "temporal_visibility"),
        )
    assert env("api")["DATABASE_URL"] == env("worker")["DATABASE_URL"]


def test_temporal_runs_on_the_postgres_service() -> None:
    temporal, pg = env("temporal"), env("postgres")
    assert temporal["DB"] == "postgres12"
    assert temporal["POSTGRES_SEEDS"] == "postgres"
    assert temporal["DB_PORT"] == "5432"
    assert temporal["POSTGRES_USER"] == pg.get("POSTGRES_USER", "postgres")
    assert temporal["POSTGRES_PWD"] == pg["POSTGRES_PASSWORD"]


def test_services_use_the_temporal_service_and_its_namespace() -> None:
    namespace = env("temporal").get("DEFAULT_NAMESPACE", "default")
    for name in (*APP_SERVICES, "temporal-ui"):
        host, _, port = env(name)["TEMPORAL_ADDRESS"].rpartition(":")
        assert host == "temporal" and port == "7233", f"{name}: TEMPORAL_ADDRESS is not the temporal service"
    for name in APP_SERVICES:
        assert effective_env(name).get("TEMPORAL_NAMESPACE", Settings().temporal_namespace) == namespace, (
            f"{name} uses a namespace auto-setup does not create"
        )
    assert env("api").get("TEMPORAL_TASK_QUEUE") == env("worker").get("TEMPORAL_TASK_QUEUE"), (
        "the API would start workflows on a queue no worker polls"
    )


def test_keycloak_imports_the_realm_the_emulator_seeds_from() -> None:
    from dev.emulators.keycloak import DEFAULT_REALM_FILE

    kc = service("keycloak")
    assert "--import-realm" in command("keycloak")
    mounted = []
    for volume in kc.get("volumes") or []:
        source, target = (
            (volume["source"], volume["target"]) if isinstance(volume, dict) else str(volume).split(":")[:2]
        )
        if target.startswith(KEYCLOAK_IMPORT_DIR + "/") or target == KEYCLOAK_IMPORT_DIR:
            mounted.append((REPO_ROOT / source).resolve())
    assert mounted == [Path(DEFAULT_REALM_FILE).resolve()], (
        f"Keycloak imports {mounted}, the emulator {DEFAULT_REALM_FILE}"
    )


def test_token_issuer_is_the_url_the_services_use() -> None:
    """The API checks iss == KEYCLOAK_URL/realms/REALM; KC_HOSTNAME fixes the iss Keycloak writes."""
    kc = env("keycloak")
    hostname = kc.get("KC_HOSTNAME", "")
    assert hostname.startswith(("http://", "https://")), "KC_HOSTNAME must be a full URL (scheme, host, port)"
    for name in APP_SERVICES:
        url = effective_env(name)["KEYCLOAK_URL"]
        assert url.rstrip("/") == hostname.rstrip("/"), f"{name}: tokens say iss={hostname}, the service expects {url}"
        parts = urlsplit(url)
        assert parts.hostname == "keycloak" and parts.port == int(kc.get("KC_HTTP_PORT", "8080"))
        assert effective_env(name).get("KEYCLOAK_REALM", Settings().keycloak_realm) == realm()["realm"]
    issuer = f"{hostname.rstrip('/')}/realms/{realm()['realm']}"
    assert env("temporal-ui")["TEMPORAL_AUTH_PROVIDER_URL"].rstrip("/") == issuer


def test_service_account_and_audience_exist_in_the_realm() -> None:
    clients = {client["clientId"]: client for client in realm()["clients"]}
    worker_client = effective_env("worker").get("KEYCLOAK_CLIENT_ID", Settings().keycloak_client_id)
    assert worker_client in clients and clients[worker_client].get("serviceAccountsEnabled")
    audience = effective_env("api").get("API_AUDIENCE", Settings().api_audience)
    audiences = {
        mapper.get("config", {}).get("included.custom.audience")
        for client in realm()["clients"]
        for mapper in client.get("protocolMappers", [])
    }
    assert audience in audiences, f"no client's tokens carry the API audience {audience!r}"


def test_api_listens_on_the_published_port() -> None:
    api = effective_env("api")
    port = int(api.get("API_PORT", Settings().api_port))
    assert api.get("API_HOST") == "0.0.0.0", "the API would listen on the container's loopback only"
    assert ports("api") == [(port, port)], f"api publishes {ports('api')}, listens on {port}"
    assert str(port) in " ".join(dockerfile_args("EXPOSE")).split()
    check = " ".join(str(part) for part in healthcheck("api")["test"])
    assert f":{port}/" in check, "the api healthcheck probes another port"


def test_temporal_ui_codec_endpoint_is_the_api_codec_route_on_its_published_port() -> None:
    ui = env("temporal-ui")
    codec = urlsplit(ui["TEMPORAL_CODEC_ENDPOINT"])
    published_api_ports = {published for published, _ in ports("api")}
    assert codec.hostname in ("localhost", "127.0.0.1"), "the browser, not the UI container, calls the codec server"
    assert codec.port in published_api_ports, f"codec port {codec.port}, api published on {published_api_ports}"
    assert codec.path == "/codec"
    assert ui["TEMPORAL_CODEC_PASS_ACCESS_TOKEN"] == "true"


def test_temporal_ui_login_and_port() -> None:
    ui = env("temporal-ui")
    ui_port = Settings().temporal_ui_port
    assert ports("temporal-ui") == [(ui_port, int(ui.get("TEMPORAL_UI_PORT", "8080")))]
    assert ui["TEMPORAL_AUTH_ENABLED"] == "true"
    assert ui["TEMPORAL_AUTH_CLIENT_ID"] == "temporal-ui"
    callback = urlsplit(ui["TEMPORAL_AUTH_CALLBACK_URL"])
    assert callback.port == ui_port and callback.path == "/auth/sso/callback"


def test_depends_on_targets_exist_are_healthchecked_and_awaited() -> None:
    for name, svc in services().items():
        depends = svc.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on must use `condition: service_healthy`"
        for target, spec in depends.items():
            assert target in services(), f"{name} depends on undefined service {target}"
            assert (spec or {}).get("condition") == "service_healthy", (
                f"{name} does not wait for {target} to be healthy"
            )
            assert healthcheck(target) is not None, f"{name} waits for {target}, which has no healthcheck"
    for name in ("postgres", "temporal", "keycloak", "api"):
        assert healthcheck(name) is not None, f"{name} has no healthcheck"
    for name in APP_SERVICES:
        assert {"postgres", "temporal", "keycloak"} <= set(service(name).get("depends_on") or {})


def test_keycloak_health_endpoint_is_enabled() -> None:
    assert env("keycloak").get("KC_HEALTH_ENABLED") == "true"
    assert "/health/ready" in " ".join(healthcheck("keycloak")["test"])


# --- referenced files ------------------------------------------------------------------------------------


def test_every_referenced_file_exists() -> None:
    for name, svc in services().items():
        build = svc.get("build")
        if build is not None:
            context = REPO_ROOT / (build if isinstance(build, str) else build.get("context", "."))
            assert context.is_dir(), f"{name}: build context {context} is missing"
            dockerfile_path = context / (
                "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            )
            assert dockerfile_path.is_file(), f"{name}: {dockerfile_path} is missing"
        for volume in svc.get("volumes") or []:
            source = volume.get("source") if isinstance(volume, dict) else str(volume).split(":")[0]
            if source and source.startswith((".", "/")):
                assert (REPO_ROOT / source).exists(), f"{name}: mounted {source} does not exist"
        for env_file in [svc["env_file"]] if isinstance(svc.get("env_file"), str) else svc.get("env_file") or []:
            path = env_file if isinstance(env_file, str) else env_file["path"]
            assert (REPO_ROOT / path).exists() or (isinstance(env_file, dict) and not env_file.get("required", True))
        for config in svc.get("configs") or []:
            source = config if isinstance(config, str) else config["source"]
            assert source in (compose().get("configs") or {}), f"{name}: undefined config {source}"
    for top in ("configs", "secrets"):
        for key, spec in (compose().get(top) or {}).items():
            if "file" in spec:
                assert (REPO_ROOT / spec["file"]).is_file(), f"{top}.{key}: {spec['file']} is missing"


def test_postgres_init_scripts_create_the_databases_others_use() -> None:
    scripts = ""
    for config in service("postgres").get("configs") or []:
        spec = compose()["configs"][config["source"] if isinstance(config, dict) else config]
        scripts += spec.get("content") or (REPO_ROOT / spec["file"]).read_text()
    for volume in service("postgres").get("volumes") or []:
        source, _, target = str(volume).partition(":")
        if target.startswith("/docker-entrypoint-initdb.d") and source.startswith("."):
            path = REPO_ROOT / source
            scripts += "".join(p.read_text() for p in sorted(path.glob("*.sql"))) if path.is_dir() else path.read_text()
    keycloak_db = urlsplit(env("keycloak")["KC_DB_URL"].removeprefix("jdbc:")).path.lstrip("/")
    assert keycloak_db == env("postgres").get("POSTGRES_DB") or re.search(
        rf"CREATE DATABASE\s+\"?{re.escape(keycloak_db)}\b", scripts, re.IGNORECASE
    ), f"Keycloak's database {keycloak_db!r} is never created"
    assert urlsplit(env("keycloak")["KC_DB_URL"].removeprefix("jdbc:")).hostname == "postgres"


# --- Dockerfile ------------------------------------------------------------------------------------------


def test_dockerfile_base_user_and_install() -> None:
    assert dockerfile_args("FROM")[0].split()[0] == "python:3.11-slim"
    users = dockerfile_args("USER")
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must run as a non-root user"
    installs = [args for args in dockerfile_args("RUN") if re.search(r"\bpip install\b", args)]
    assert any(re.search(r"\bpip install (?:[^&;|]*\s)?\.(?:\s|$)", args) for args in installs), (
        "`pip install .` is missing"
    )
    assert not any("[test]" in args for args in installs), "the test extra does not belong in the image"


@pytest.mark.parametrize("module", ["api.main", "workers.main"])
def test_container_modules_are_importable_and_runnable(module: str) -> None:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, f"{module} is not importable"
    assert 'if __name__ == "__main__"' in Path(spec.origin).read_text(), f"`python -m {module}` would do nothing"


def test_commands_run_the_service_modules() -> None:
    assert dockerfile_cmd() == ["python", "-m", "api.main"], "the image's default command must run the API"
    for name, module in SERVICE_MODULES.items():
        cmd = command(name)
        assert cmd[:2] == ["python", "-m"] and cmd[2] == module, f"{name} runs {cmd}, expected python -m {module}"
        assert importlib.util.find_spec(cmd[2]) is not None


def test_dockerfile_healthcheck_probes_healthz_on_the_api_port() -> None:
    check = " ".join(dockerfile_healthcheck_cmd())
    assert "urllib" in check and "/healthz" in check
    port = dockerfile_env().get("API_PORT", str(Settings().api_port))
    assert f"'{port}'" in check or f":{port}/" in check, "the image healthcheck probes another port"
    assert str(port) in " ".join(dockerfile_args("EXPOSE")).split()


def test_image_contains_the_packages_migrations_and_realm_beside_each_other() -> None:
    """db/pool.py looks for migrations/ relative to the source packages: they must land together; the
    dev stack and the emulators stay out of the image."""
    import_root = dockerfile_env().get("PYTHONPATH")
    assert import_root, "without PYTHONPATH the installed wheel (no migrations/) would be imported"
    pyproject = image_path("pyproject.toml")
    assert pyproject is not None, "pyproject.toml is not in the image: `pip install .` cannot run"
    for package in ("api", "workers", "workflows", "activities", "domain", "integrations", "db", "kit"):
        assert image_path(package) == f"{import_root}/{package}", f"{package}/ is not under PYTHONPATH in the image"
    sql_files = sorted(db.pool.MIGRATIONS_DIR.glob("*.sql"))
    assert sql_files, "no migrations to ship"
    for sql in sql_files:
        relative = sql.relative_to(REPO_ROOT).as_posix()
        assert image_path(relative) == f"{import_root}/{relative}", (
            f"{relative} is not where db/pool.py looks in the image"
        )
    assert image_path("dev/stack.py") is None, "the dev stack (and its emulators) must not ship in the image"


def test_dockerignore_keeps_local_state_out() -> None:
    for path in (".venv", ".git", ".data", "tests", ".env"):
        assert not in_build_context(path), f"{path} would be sent into the image"
