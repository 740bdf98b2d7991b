"""The Docker deployment files: Dockerfile, .dockerignore and docker-compose.yml.

There is no Docker engine on the development machine, so the image is simulated: the files the
Dockerfile copies (filtered by .dockerignore) are copied into a temporary /app, and the
Dockerfile's own collectstatic, CMD and HEALTHCHECK run there with this virtualenv's pinned
dependencies, under the environment docker-compose.yml gives the containers.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

import pytest
import yaml

from tests.support import free_port

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
PORTAL_SERVICES = ("web", "worker", "beat")
# Values a user would put in .env; everything else falls back to the compose file's defaults.
TEST_VARIABLES = {"POSTGRES_PASSWORD": "compose-test-password-42"}
REQUIRED_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]+\}")
# The password of scheme://user:password@host..., up to the last "@".
URL_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^:/@]*:(?P<password>.*)@[^@]*$")
SENSITIVE_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|CREDENTIAL|_KEY$", re.IGNORECASE)


# --- Reading the files ------------------------------------------------------------------------


def load_compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


_VARIABLE = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Resolve ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error} and $$
    the way Docker Compose does."""

    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name", "op", "arg")
        present = name in variables
        usable = present and (variables[name] != "" or op in ("-", "?"))
        if op in (":?", "?") and not usable:
            raise LookupError(f"required variable {name} is missing: {arg}")
        if op in (":-", "-") and not usable:
            return arg
        return variables.get(name, "")

    return _VARIABLE.sub(replace, value)


def container_environment(service: str, variables: dict[str, str], secrets_dir: Path) -> dict:
    """The environment compose gives SERVICE, with /run/secrets/* pointing into SECRETS_DIR."""
    compose = load_compose()
    env = {
        key: interpolate(str(value), variables)
        for key, value in compose["services"][service]["environment"].items()
    }
    for key, value in env.items():
        if value.startswith("/run/secrets/"):
            env[key] = str(secrets_dir / value.removeprefix("/run/secrets/"))
    return env


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    instructions, pending = [], ""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def instructions_named(name: str) -> list[str]:
    return [arguments for keyword, arguments in dockerfile_instructions() if keyword == name]


def exec_form(arguments: str) -> list[str]:
    """The JSON array of a CMD/HEALTHCHECK CMD; the shell form would need /bin/sh in the image
    and does not forward signals to gunicorn."""
    command = json.loads(arguments)
    assert isinstance(command, list) and all(isinstance(part, str) for part in command)
    return command


def dockerfile_env() -> dict[str, str]:
    env = {}
    for arguments in instructions_named("ENV"):
        for pair in shlex.split(arguments):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def copy_instructions() -> list[tuple[list[str], str]]:
    copies = []
    for arguments in instructions_named("COPY"):
        parts = [part for part in shlex.split(arguments) if not part.startswith("--")]
        copies.append((parts[:-1], parts[-1]))
    return copies


def dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def is_ignored(relative: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps RELATIVE (or a folder above it) out of the build context."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        candidates = [pattern, pattern[3:]] if pattern.startswith("**/") else [pattern]
        if any(fnmatch.fnmatchcase(p, c) for p in prefixes for c in candidates):
            return True
    return False


def clean_environment(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TZ")}
    return {**base, "HOME": os.environ.get("HOME", "/tmp"), **extra}


def image_environment(tmp: Path, **extra: str) -> dict[str, str]:
    """A container's environment, run here: the Dockerfile's ENV (its /tmp paths moved under
    `tmp`, since this machine's /tmp is shared), then `extra`."""
    env = dockerfile_env()
    for key, value in env.items():
        if value.startswith("/tmp/"):
            env[key] = str(tmp / value.removeprefix("/tmp/"))
    return clean_environment(**env, **extra)


# --- docker-compose.yml -----------------------------------------------------------------------


def test_compose_has_the_services_and_they_share_one_image_and_environment():
    compose = load_compose()
    services = compose["services"]
    assert {"web", "worker", "beat", "postgres", "redis"} <= services.keys()

    shared_env = compose["x-portal-env"]
    builds = {json.dumps(services[name]["build"]) for name in (*PORTAL_SERVICES, "migrate")}
    images = {services[name]["image"] for name in (*PORTAL_SERVICES, "migrate")}
    assert builds == {'"."'}, "web, worker, beat and migrate must build the same Dockerfile"
    assert len(images) == 1, "...and tag it once, so that compose builds it once"
    for name in (*PORTAL_SERVICES, "migrate"):
        environment = services[name]["environment"]
        assert {k: environment[k] for k in shared_env} == shared_env, name
        assert "secret_key" in services[name]["secrets"], name

    resolved = {k: interpolate(v, TEST_VARIABLES) for k, v in shared_env.items()}
    assert urlsplit(resolved["REDIS_URL"]).hostname == "redis"
    assert urlsplit(resolved["DATABASE_URL"]).hostname == "postgres"


def test_compose_starts_the_portal_after_healthy_services_and_migrations():
    services = load_compose()["services"]
    assert services["migrate"]["command"] == ["python", "manage.py", "migrate", "--noinput"]
    # A one-shot: restarting it after success would run migrate forever.
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in PORTAL_SERVICES:
        assert services[name]["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }, name
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
    assert services["postgres"]["image"] == "postgres:16"
    assert services["redis"]["image"] == "redis:7"
    assert "postgres-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert "postgres-data" in load_compose()["volumes"]


def test_worker_consumes_every_queue_tasks_are_routed_to(settings):
    services = load_compose()["services"]
    command = services["worker"]["command"]
    assert command[:4] == ["celery", "-A", "portal", "worker"]
    queues = set(command[command.index("-Q") + 1].split(","))
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    assert "provisioning" in routed
    assert routed | {"celery"} <= queues  # "celery": Celery's default queue
    assert services["beat"]["command"][:4] == ["celery", "-A", "portal", "beat"]
    # Only one service runs beat, or every periodic task would be sent twice.
    beats = [name for name, s in services.items() if "beat" in (s.get("command") or [])]
    assert beats == ["beat"]


def test_worker_gets_the_kubeconfig_read_only():
    worker = load_compose()["services"]["worker"]
    (mount,) = worker["volumes"]
    assert mount["type"] == "bind" and mount["read_only"] is True
    # Docker would otherwise create an empty directory where the kubeconfig is missing.
    assert mount["bind"]["create_host_path"] is False
    assert mount["target"] == worker["environment"]["KUBECONFIG"]
    assert mount["target"] == "/etc/hub-on-demand/kubeconfig"
    assert interpolate(mount["source"], {}) == "./.devcluster/kubeconfig"
    assert interpolate(mount["source"], {"KUBECONFIG_FILE": "/k/c"}) == "/k/c"


def test_compose_holds_no_secret_values():
    compose = load_compose()
    declared_secrets = compose["secrets"]
    for name, secret in declared_secrets.items():
        # From a file the user creates, under a folder kept out of the build context.
        assert secret.keys() == {"file"}, name
        assert secret["file"].startswith("./.secrets/"), name
        assert is_ignored(secret["file"].removeprefix("./"), dockerignore_patterns())
        assert not (REPO / secret["file"]).exists() or _untracked(secret["file"])

    environments = {"x-portal-env": (compose["x-portal-env"], [])}
    for name, service in compose["services"].items():
        assert isinstance(service.get("environment", {}), dict), f"{name}: use a mapping"
        environments[name] = (service.get("environment", {}), service.get("secrets", []))

    checked = 0
    for where, (environment, service_secrets) in environments.items():
        for key, value in environment.items():
            # Uninterpolated, a URL does not split reliably ("?" in "${X:?...}" starts a query).
            credentials = URL_PASSWORD.search(str(value))
            if credentials:
                password = credentials["password"]
                assert REQUIRED_REFERENCE.fullmatch(password), f"{where}: {key}"
                checked += 1
            if not SENSITIVE_NAME.search(key.removesuffix("_FILE")):
                continue
            checked += 1
            if key.endswith("_FILE"):
                secret = value.removeprefix("/run/secrets/")
                assert value.startswith("/run/secrets/"), f"{where}: {key}"
                assert secret in declared_secrets, f"{where}: {key}"
                assert where == "x-portal-env" or secret in service_secrets, f"{where}: {key}"
            else:
                assert REQUIRED_REFERENCE.fullmatch(value), f"{where}: {key}={value!r}"
    # DATABASE_URL's password, SECRET_KEY_FILE, and POSTGRES_PASSWORD at least.
    assert checked >= 3

    with pytest.raises(LookupError, match="POSTGRES_PASSWORD"):
        interpolate(compose["x-portal-env"]["DATABASE_URL"], {})
    with pytest.raises(LookupError, match="POSTGRES_PASSWORD"):
        interpolate(compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"], {})


def _untracked(path: str) -> bool:
    tracked = subprocess.run(
        ["git", "ls-files", "--error-unmatch", path], cwd=REPO, capture_output=True, check=False
    )
    return tracked.returncode != 0


def test_database_settings_match_the_postgres_service():
    compose = load_compose()
    database = urlsplit(interpolate(compose["x-portal-env"]["DATABASE_URL"], TEST_VARIABLES))
    postgres = {
        k: interpolate(v, TEST_VARIABLES)
        for k, v in compose["services"]["postgres"]["environment"].items()
    }
    assert database.username == postgres["POSTGRES_USER"]
    assert database.password == postgres["POSTGRES_PASSWORD"]
    assert database.path == "/" + postgres["POSTGRES_DB"]
    assert (database.hostname, database.port) == ("postgres", 5432)


# --- Dockerfile -------------------------------------------------------------------------------


def test_dockerfile_base_image_matches_the_supported_python():
    (base,) = instructions_named("FROM")
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11,<3.12"
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?(@sha256:[0-9a-f]{64})?", base), base


def test_dockerfile_installs_the_project_and_runs_as_a_non_root_user():
    runs = instructions_named("RUN")
    assert any(re.search(r"pip install --no-cache-dir \.(\s|$)", run) for run in runs)
    users = instructions_named("USER")
    assert users and users[-1].split(":")[0] not in ("root", "0")
    last_user = max(i for i, (k, _) in enumerate(dockerfile_instructions()) if k == "USER")
    assert all(k != "RUN" for k, _ in dockerfile_instructions()[last_user:])
    # The build-only key must not become part of the image's environment or build arguments.
    assert "SECRET_KEY" not in dockerfile_env()
    assert not any("SECRET" in arg for arg in instructions_named("ARG"))


def test_dockerfile_serves_gunicorn_on_port_8000():
    (cmd,) = instructions_named("CMD")
    command = exec_form(cmd)
    assert command[0] == "gunicorn"
    assert command[1] in ("portal.wsgi", "portal.wsgi:application")
    assert command[command.index("--bind") + 1] == "0.0.0.0:8000"
    assert instructions_named("EXPOSE") == ["8000"]
    assert load_compose()["services"]["web"]["ports"] == ["127.0.0.1:${PORTAL_PORT:-8000}:8000"]


def test_every_copied_file_exists_and_is_in_the_build_context():
    patterns = dockerignore_patterns()
    assert not any(p.startswith("!") for p in patterns), "is_ignored() does not handle '!'"
    copies = copy_instructions()
    assert copies
    for sources, _destination in copies:
        for source in sources:
            assert not any(ch in source for ch in "*?["), source
            assert (REPO / source).exists(), source
            assert not is_ignored(source, patterns), f"{source} is excluded by .dockerignore"
    for private in (".venv", ".git", ".devcluster", ".state", "db.sqlite3", "test-artifacts"):
        assert is_ignored(private, patterns), private
    assert is_ignored("portal/__pycache__/settings.cpython-311.pyc", patterns)


# --- The image, simulated ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_app(tmp_path_factory) -> Path:
    """/app as the Dockerfile builds it: its COPYs (minus .dockerignore), then collectstatic."""
    app = tmp_path_factory.mktemp("image") / "app"
    app.mkdir()
    patterns = dockerignore_patterns()

    def ignore(folder: str, names: list[str]) -> set[str]:
        relative = Path(folder).relative_to(REPO)
        return {n for n in names if is_ignored((relative / n).as_posix(), patterns)}

    for sources, destination in copy_instructions():
        for source in sources:
            target = app / destination
            if destination.endswith("/") or len(sources) > 1:
                target = target / Path(source).name
            if (REPO / source).is_dir():
                shutil.copytree(REPO / source, target, ignore=ignore)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / source, target)

    (collect,) = [run for run in instructions_named("RUN") if "collectstatic" in run]
    words = shlex.split(collect)
    inline = {}
    while "=" in words[0]:
        key, _, value = words.pop(0).partition("=")
        inline[key] = value
    assert words[0] == "python"
    result = subprocess.run(
        [sys.executable, *words[1:]],
        cwd=app,
        env=image_environment(app.parent, **inline),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return app


@pytest.fixture
def secrets_dir(tmp_path) -> Path:
    """What compose mounts at /run/secrets: the user's ./.secrets/secret_key."""
    (tmp_path / "secret_key").write_text("compose-test-" + "k" * 50 + "\n")
    return tmp_path


def test_collectstatic_at_build_time_fills_static_root(image_app):
    static_root = image_app / "staticfiles"
    assert (static_root / "portal" / "portal.css").read_text() == (
        REPO / "static" / "portal" / "portal.css"
    ).read_text()
    # The compressing storage of the settings ran, and the admin's files are collected too.
    assert (static_root / "portal" / "portal.css.gz").exists()
    assert (static_root / "admin" / "css" / "base.css").exists()


@pytest.mark.parametrize("service", PORTAL_SERVICES)
def test_compose_environment_configures_the_portal(image_app, secrets_dir, service, tmp_path):
    env = container_environment(service, TEST_VARIABLES, secrets_dir)
    probe = (
        "import portal, portal.settings as s; "
        "d = s.DATABASES['default']; "
        "print(portal.__file__); "
        "print(d['ENGINE'], d['HOST'], d['PORT'], d['NAME'], d['USER'], d['PASSWORD']); "
        "print(s.CELERY_BROKER_URL, s.DEBUG, s.KUBECONFIG); "
        "print(s.SECRET_KEY)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=image_app,
        env=image_environment(tmp_path, **env),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    module, database, celery, secret_key = result.stdout.splitlines()
    assert Path(module).is_relative_to(image_app)
    assert database == (
        "django_prometheus.db.backends.postgresql postgres 5432 hubondemand hubondemand "
        + TEST_VARIABLES["POSTGRES_PASSWORD"]
    )
    kubeconfig = "/etc/hub-on-demand/kubeconfig" if service == "worker" else "None"
    assert celery == f"redis://redis:6379/0 False {kubeconfig}"
    assert secret_key == (secrets_dir / "secret_key").read_text().strip()


def test_deploy_check_passes_with_the_web_environment(image_app, secrets_dir, tmp_path):
    """`check --deploy` does not connect to the database: host "postgres" does not even resolve
    outside compose, and the check passes without it."""
    env = container_environment("web", TEST_VARIABLES, secrets_dir)
    assert urlsplit(env["DATABASE_URL"]).hostname == "postgres"
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "ERROR"],
        cwd=image_app,
        env=image_environment(tmp_path, **env),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERRORS:" not in result.stderr


def test_cmd_serves_the_portal_and_the_healthcheck_sees_it(image_app, secrets_dir, tmp_path):
    port = free_port()
    command = exec_form(instructions_named("CMD")[0])
    command[0] = str(VENV_BIN / "gunicorn")
    command[command.index("--bind") + 1] = f"127.0.0.1:{port}"

    (healthcheck,) = instructions_named("HEALTHCHECK")
    check = exec_form(healthcheck.partition(" CMD ")[2])
    assert check[0] == "python" and ", 8000," in check[-1]
    check = [sys.executable, *check[1:-1], check[-1].replace(", 8000,", f", {port},")]

    env = image_environment(tmp_path, **container_environment("web", TEST_VARIABLES, secrets_dir))
    server = subprocess.Popen(
        command, cwd=image_app, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            healthy = subprocess.run(check, cwd=image_app, capture_output=True, check=False)
            if healthy.returncode == 0 or time.monotonic() > deadline:
                break
            assert server.poll() is None, server.stdout.read().decode()
            time.sleep(0.3)
        assert healthy.returncode == 0, healthy.stderr.decode()
        # The login page really is served, and so are the static files.
        with urlopen(f"http://127.0.0.1:{port}/accounts/login/", timeout=10) as login:
            assert 'name="password"' in login.read().decode()
        with urlopen(f"http://127.0.0.1:{port}/static/portal/portal.css", timeout=10) as css:
            assert css.read() == (REPO / "static" / "portal" / "portal.css").read_bytes()
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0].decode()
    assert "Booting worker" in output
    # With gunicorn gone the health check fails.
    assert subprocess.run(check, cwd=image_app, capture_output=True, check=False).returncode != 0


@pytest.mark.parametrize("service", ["worker", "beat", "watcher"])
def test_compose_healthchecks_of_the_background_services_read_their_heartbeats(
    image_app, secrets_dir, tmp_path, service
):
    compose = load_compose()["services"][service]
    test = compose["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"] and test[2:] == ["manage.py", "healthcheck", service]
    check = [sys.executable, *test[2:]]
    env = image_environment(
        tmp_path,
        **container_environment(service, TEST_VARIABLES, secrets_dir),
        HEALTH_HEARTBEAT_DIR=str(tmp_path / "health"),
    )

    def healthy() -> bool:
        run = subprocess.run(check, cwd=image_app, env=env, capture_output=True, check=False)
        return run.returncode == 0

    assert not healthy()  # never started
    (tmp_path / "health").mkdir()
    heartbeat = tmp_path / "health" / f"{service}.heartbeat"
    heartbeat.touch()
    assert healthy()
    os.utime(heartbeat, (time.time() - 600, time.time() - 600))
    assert not healthy()  # stuck


def _get(port: int, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urlopen(request, timeout=10) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.mark.django_db
def test_gunicorn_adds_up_its_workers_metrics_and_logs_json_lines(image_app, secrets_dir, tmp_path):
    """The image's gunicorn (gunicorn.conf.py, two workers): /metrics counts every worker's
    requests, also after one of them exits; every log line is JSON, the access log's with the
    request id of the answer; probes and scrapes stay out of it."""
    from tests.support import database_url, redis_url_for_this_worker

    port, token = free_port(), "scrape-" + "t" * 30
    command = exec_form(instructions_named("CMD")[0])
    command[0] = str(VENV_BIN / "gunicorn")
    command[command.index("--bind") + 1] = f"127.0.0.1:{port}"
    env = image_environment(
        tmp_path,
        **{
            **container_environment("web", TEST_VARIABLES, secrets_dir),
            "ALLOWED_HOSTS": "portal.example.org",
            "DATABASE_URL": database_url(),
            "REDIS_URL": redis_url_for_this_worker(),
            "METRICS_TOKEN": token,
        },
    )
    metrics_dir = Path(env["PROMETHEUS_MULTIPROC_DIR"])
    assert env["WEB_CONCURRENCY"] == "2" and metrics_dir.is_relative_to(tmp_path)
    server = subprocess.Popen(
        command, cwd=image_app, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    pod = {"Host": "10.244.0.9:8000"}

    def counted() -> float:
        status, _, body = _get(port, "/metrics", Authorization=f"Bearer {token}", **pod)
        assert status == 200, body
        for line in body.decode().splitlines():
            if line.startswith('django_http_responses_total_by_status_total{status="200"}'):
                return float(line.split()[-1])
        return 0.0

    try:
        deadline = time.monotonic() + 30
        while _get_or_none(port, "/healthz", **pod) != 200:
            assert server.poll() is None and time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.3)
        request_ids = set()
        for _ in range(6):
            status, headers, _ = _get(port, "/accounts/login/", Host="portal.example.org")
            assert status == 200
            request_ids.add(headers["X-Request-ID"])
        assert _get(port, "/metrics", **pod)[0] == 401
        assert [counted() for _ in range(4)] == [6.0] * 4
        # One worker fewer (SIGTTOU): what it counted stays counted.
        workers = {path.stem.rsplit("_", 1)[1] for path in metrics_dir.glob("*.db")}
        server.send_signal(signal.SIGTTOU)
        time.sleep(2)
        assert counted() == 6.0
        assert _get(port, "/accounts/login/", Host="portal.example.org")[0] == 200
        assert counted() == 7.0
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0].decode()
    assert len(workers) >= 2, workers  # the master and at least one worker wrote there
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert any("Booting worker" in line["event"] for line in lines)
    access = [line for line in lines if line["event"] == "http.request"]
    assert {line["request_id"] for line in access} >= request_ids
    login = next(line for line in access if line["request_id"] in request_ids)
    assert (login["route"], login["status"], login["method"]) == ("accounts/login/", 200, "GET")
    assert not [line for line in access if line.get("path") in ("/healthz", "/metrics")]
    assert token not in output


def _get_or_none(port: int, path: str, **headers: str) -> int | None:
    try:
        return _get(port, path, **headers)[0]
    except (URLError, ConnectionError):
        return None
