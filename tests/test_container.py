"""The container wiring — Dockerfile, docker-compose.yml, .dockerignore — checked as data.

No Docker engine runs where the tests run, so nothing here builds or starts a container. The files are
parsed (the Dockerfile by a small line parser, the Compose file by PyYAML, which resolves its anchors
and merge keys) and the pieces are checked to fit: every URL a service is given names a service it
waits for, on a port that service listens on; health checks exist where a dependency waits for
health; images are pinned; the build context carries what ``pip install .`` needs and nothing secret.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERIGNORE = ROOT / ".dockerignore"
SAMPLE_ENV = ROOT / "sample.env"

DEMO_SERVICES = {"workos-sim", "github-sim", "demo-db", "syncd-demo"}
#: The daemon against the user's providers, and its migrations: only with `--profile live`.
LIVE_SERVICES = {"migrate", "syncd"}
CORE_SERVICES = {"postgres", "jaeger"} | LIVE_SERVICES
#: The only credential values allowed in these files: the Postgres default and the simulators' fakes.
PLACEHOLDERS = {"syncd", "sk_test_simulator", "ghp_simulator"}
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|API_KEY|PRIVATE_KEY")
#: Shapes of real credentials; none may appear anywhere in the container files.
REAL_SECRET = re.compile(
    r"sk_live_|sk_test_(?!simulator\b)\w+|gh[pousr]_(?!simulator\b)[A-Za-z0-9]{20,}|github_pat_|-----BEGIN"
)


# ---- Dockerfile -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction after joining continuation lines; ``stage`` counts FROMs from 0."""

    stage: int
    keyword: str
    args: str
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order. Comment lines are dropped, also inside continuations (as Docker does)."""
    instructions: list[Instruction] = []
    stage, start = -1, 0
    parts: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith("#") or (not line and not parts):
            continue
        if not parts:
            start = number
        if line.endswith("\\"):
            parts.append(line[:-1].strip())
            continue
        parts.append(line)
        keyword, _, args = " ".join(p for p in parts if p).partition(" ")
        parts = []
        if keyword.upper() == "FROM":
            stage += 1
        instructions.append(Instruction(stage, keyword.upper(), args.strip(), start))
    assert not parts, "Dockerfile ends inside a continuation"
    return instructions


def global_args(instructions: list[Instruction]) -> dict[str, str]:
    """ARG defaults declared before the first FROM: the only ones a FROM line may use."""
    found: dict[str, str] = {}
    for ins in instructions:
        if ins.stage >= 0:
            break
        if ins.keyword == "ARG":
            name, _, default = ins.args.partition("=")
            found[name.strip()] = default.strip().strip('"')
    return found


def substitute(value: str, variables: Mapping[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m[1] or m[2], ""), value)


def base_images(instructions: list[Instruction]) -> list[str]:
    """The image each FROM pulls, ARGs resolved; FROMs naming an earlier stage are left out."""
    args = global_args(instructions)
    stages: set[str] = set()
    images: list[str] = []
    for ins in instructions:
        if ins.keyword != "FROM":
            continue
        words = [w for w in ins.args.split() if not w.startswith("--")]
        image = substitute(words[0], args)
        if image not in stages:
            images.append(image)
        if len(words) == 3 and words[1].upper() == "AS":
            stages.add(words[2])
    return images


def exec_form(args: str) -> list[str]:
    """The JSON (exec) form of CMD/ENTRYPOINT/HEALTHCHECK CMD; shell form fails the assertion."""
    assert args.startswith("["), f"expected exec (JSON) form, got {args!r}"
    parsed = json.loads(args)
    assert isinstance(parsed, list) and all(isinstance(a, str) for a in parsed)
    return parsed


def env_assignments(instructions: list[Instruction]) -> dict[str, str]:
    """Every ``ENV k=v …`` (and legacy ``ENV k v``) of the given instructions."""
    found: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword != "ENV":
            continue
        words = shlex.split(ins.args)
        if "=" not in words[0]:
            found[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            name, _, value = word.partition("=")
            found[name] = value
    return found


def copy_sources(instructions: list[Instruction]) -> list[str]:
    """Paths COPY/ADD take from the build context (not ``--from`` another stage)."""
    sources: list[str] = []
    for ins in instructions:
        if ins.keyword not in ("COPY", "ADD"):
            continue
        words = shlex.split(ins.args)
        if any(w.startswith("--from") for w in words):
            continue
        sources.extend(w.rstrip("/") for w in words[:-1] if not w.startswith("--"))
    return sources


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final_stage(dockerfile: list[Instruction]) -> list[Instruction]:
    last = max(ins.stage for ins in dockerfile)
    return [ins for ins in dockerfile if ins.stage == last]


def only(instructions: list[Instruction], keyword: str) -> Instruction:
    matches = [ins for ins in instructions if ins.keyword == keyword]
    assert len(matches) == 1, f"expected one {keyword} in the final stage, found {len(matches)}"
    return matches[0]


# ---- .dockerignore --------------------------------------------------------------------------------


def dockerignore_patterns(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(is_exception, regex) per line, in order; the last matching line decides, as in Docker."""
    patterns: list[tuple[bool, re.Pattern[str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        glob = line.lstrip("!").strip().strip("/").removeprefix("./")
        patterns.append((negated, re.compile(glob_to_regex(glob))))
    return patterns


def glob_to_regex(glob: str) -> str:
    """Go filepath.Match syntax plus ``**`` (any number of directories); paths are context-relative."""
    out, i = [], 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        elif glob[i] == "[":
            end = glob.index("]", i)
            out.append("[" + glob[i + 1 : end] + "]")  # same class syntax in Go and Python
            i = end + 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return "".join(out) + r"\Z"


def is_ignored(patterns: list[tuple[bool, re.Pattern[str]]], path: str) -> bool:
    """A path is left out if it, or a directory above it, matches (the last matching pattern wins)."""
    pieces = path.strip("/").split("/")
    candidates = ["/".join(pieces[: n + 1]) for n in range(len(pieces))]
    ignored = False
    for negated, regex in patterns:
        if any(regex.match(candidate) for candidate in candidates):
            ignored = not negated
    return ignored


@pytest.mark.parametrize(
    ("pattern", "path", "ignored"),
    [
        ("*.db", "syncd.db", True),
        ("*.db", "data/syncd.db", False),  # a bare glob only matches at the context root
        ("**/*.db", "data/deep/syncd.db", True),
        ("**/__pycache__", "syncd/__pycache__/cli.cpython-312.pyc", True),
        (".venv", ".venv/bin/python", True),
        ("bench/results", "bench/results/run.json", True),
        ("bench/results", "bench/scenarios.py", False),
        ("**/*.py[cod]", "syncd/cli.pyc", True),
        ("**/*.py[cod]", "syncd/cli.py", False),
    ],
)
def test_dockerignore_matcher(pattern: str, path: str, ignored: bool) -> None:
    assert is_ignored(dockerignore_patterns(pattern), path) is ignored


def test_dockerignore_matcher_exceptions_win_when_last() -> None:
    patterns = dockerignore_patterns("*.md\n!README.md\n")
    assert is_ignored(patterns, "NOTES.md")
    assert not is_ignored(patterns, "README.md")


# ---- Compose --------------------------------------------------------------------------------------

Service = dict[str, Any]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Service]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


def interpolate(value: str, environ: Mapping[str, str] | None = None) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR-default}`` against ``environ`` (empty by
    default: what a fresh clone without .env gets)."""
    env = environ or {}

    def one(match: re.Match[str]) -> str:
        name, colon, default = match[1], match[2], match[3]
        if default is None:
            return env.get(name, "")
        if colon:
            return env.get(name) or default
        return env.get(name, default)

    return re.sub(r"\$\{(\w+)(?:(:?)-([^}]*))?\}", one, value).replace("$$", "$")


def referenced_variables(text: str) -> set[str]:
    """Names Compose interpolates from the shell or .env."""
    return set(re.findall(r"(?<!\$)\$\{(\w+)", text))


def environment(service: Service) -> dict[str, str]:
    """A service's ``environment`` as a dict, whichever of the two Compose syntaxes it uses."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.partition("=")[::2] for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def command(service: Service) -> list[str]:
    cmd = service.get("command") or []
    assert isinstance(cmd, list), "commands are written in exec (list) form"
    return [str(c) for c in cmd]


def uses_syncd_image(service: Service) -> bool:
    return "build" in service


def runs_daemon(service: Service) -> bool:
    return uses_syncd_image(service) and command(service) in ([], ["syncd", "run"])


def option(cmd: list[str], name: str) -> str:
    assert name in cmd, f"{name} missing from {cmd}"
    return cmd[cmd.index(name) + 1]


@dataclass(frozen=True)
class Port:
    host_ip: str | None
    host: int | None
    container: int


def parse_port(spec: str | int) -> Port:
    """Compose's short port syntax: ``[[ip:]host:]container[/proto]``."""
    parts = str(spec).split("/")[0].split(":")
    container = int(parts[-1])
    host = int(parts[-2]) if len(parts) >= 2 else None
    host_ip = ":".join(parts[:-2]) or None
    return Port(host_ip, host, container)


def ports(service: Service) -> list[Port]:
    return [parse_port(p) for p in service.get("ports") or []]


def listening_ports(service: Service) -> set[int]:
    """Container ports a service declares it listens on (ports, expose, a simulator's --port)."""
    found = {p.container for p in ports(service)} | {int(p) for p in service.get("expose") or []}
    cmd = command(service)
    if "--port" in cmd:
        found.add(int(option(cmd, "--port")))
    if runs_daemon(service):
        found.add(int(environment(service).get("SYNCD_HTTP_PORT", "8080")))
    return found


def depends_on(service: Service) -> dict[str, str]:
    """{dependency: condition}; the short list syntax means ``service_started``."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def waits_for(services: dict[str, Service], name: str) -> set[str]:
    """Everything ``name`` transitively depends on."""
    seen: set[str] = set()
    todo = list(depends_on(services[name]))
    while todo:
        dep = todo.pop()
        if dep not in seen:
            seen.add(dep)
            todo.extend(depends_on(services[dep]))
    return seen


def seconds(duration: str) -> float:
    """Compose durations such as ``15s``, ``1m30s``, ``500ms``."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


def urls(env: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    for name, value in env.items():
        if "://" in value:
            yield name, interpolate(value)


# ---- the Dockerfile ---------------------------------------------------------------------------------


def test_base_images_are_an_exact_python_3_12_slim(dockerfile: list[Instruction]) -> None:
    images = base_images(dockerfile)
    assert images, "no FROM"
    for image in images:
        assert re.fullmatch(r"python:3\.12\.\d+-slim(-bookworm|-trixie)?", image), image


def test_runtime_stage_runs_syncd_as_a_non_root_user(final_stage: list[Instruction]) -> None:
    user = only(final_stage, "USER")
    name = user.args.split(":")[0]
    assert name not in ("", "0", "root"), f"USER {user.args} is root"
    assert user.line < only(final_stage, "CMD").line, "USER must come before CMD"
    assert user.line < only(final_stage, "HEALTHCHECK").line, "the health check must not run as root"
    if not name.isdigit():
        return
    creations = " ".join(ins.args for ins in final_stage if ins.keyword == "RUN")
    assert f"--uid {name}" in creations, f"uid {name} is never created in the runtime stage"


def test_runtime_stage_process_settings(final_stage: list[Instruction]) -> None:
    assert exec_form(only(final_stage, "CMD").args) == ["syncd", "run"]
    health = only(final_stage, "HEALTHCHECK").args
    flags, _, cmd = health.partition("CMD ")
    assert exec_form(cmd.strip()) == ["syncd", "check"]
    assert "--timeout=" in flags and "--interval=" in flags
    assert only(final_stage, "STOPSIGNAL").args == "SIGTERM"
    assert "8080" in only(final_stage, "EXPOSE").args.split()
    assert only(final_stage, "WORKDIR").args.startswith("/")
    assert env_assignments(final_stage).get("PYTHONUNBUFFERED") == "1"
    assert not any(ins.keyword == "ENTRYPOINT" for ins in final_stage), "CMD alone so `command:` replaces it"


def test_pip_never_keeps_a_cache(dockerfile: list[Instruction]) -> None:
    installs = [ins for ins in dockerfile if ins.keyword == "RUN" and "pip install" in ins.args]
    assert installs, "the image never runs pip install"
    for ins in installs:
        assert "--no-cache-dir" in ins.args, f"line {ins.line}: pip install without --no-cache-dir"


def test_build_copies_what_pip_install_needs_and_nothing_excluded(dockerfile: list[Instruction]) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    sources = set(copy_sources(dockerfile))
    assert "." not in sources, "copy named paths; `COPY . .` would bust the cache on every edit"
    needed = {"pyproject.toml", pyproject["project"]["readme"]}
    needed |= {
        pattern.rstrip("*") for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    assert needed <= sources, f"not copied into the build: {sorted(needed - sources)}"
    patterns = dockerignore_patterns(DOCKERIGNORE.read_text())
    for source in sorted(sources):
        assert not is_ignored(patterns, source), f".dockerignore leaves out {source}, which the build copies"
        assert (ROOT / source).exists(), f"the build copies {source}, which does not exist"


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".venv/bin/python",
        ".env",
        "syncd.db",
        "data/syncd.db",
        "syncd-demo.db-wal",
        "syncd/__pycache__/cli.cpython-312.pyc",
        ".pytest_cache/v/cache",
        ".mypy_cache/3.12/x.json",
        ".ruff_cache/content",
        "bench/results/latest.json",
        "syncd.egg-info/PKG-INFO",
        "docker-compose.override.yml",  # the user's copy of the example may name their database
        "examples/your-workflows/Dockerfile",
    ],
)
def test_dockerignore_keeps_local_state_out_of_the_context(path: str) -> None:
    assert is_ignored(dockerignore_patterns(DOCKERIGNORE.read_text()), path)


def test_dockerfile_sets_no_secrets(dockerfile: list[Instruction]) -> None:
    for ins in dockerfile:
        if ins.keyword in ("ENV", "ARG", "LABEL"):
            assert not SECRET_NAME.search(ins.args), f"line {ins.line}: secrets do not belong in the image"
    assert ".env" not in copy_sources(dockerfile)


# ---- the Compose file: shape ------------------------------------------------------------------------


def test_services_and_profiles(compose: dict[str, Any], services: dict[str, Service]) -> None:
    assert "version" not in compose, "the Compose spec has no version key"
    assert set(services) == CORE_SERVICES | DEMO_SERVICES
    for name, service in services.items():
        expected = ["demo"] if name in DEMO_SERVICES else ["live"] if name in LIVE_SERVICES else []
        assert (service.get("profiles") or []) == expected, name


def active(services: dict[str, Service], *profiles: str) -> dict[str, Service]:
    """What ``docker compose --profile P … up`` starts: services without profiles, and those of P."""
    return {name: s for name, s in services.items()
            if not s.get("profiles") or set(s["profiles"]) & set(profiles)}


def test_the_demo_profile_starts_no_daemon_that_would_restart_loop(services: dict[str, Service]) -> None:
    """`docker compose --profile demo up` without a .env: every daemon it starts has its sources in the
    Compose file itself (the main daemon, configured by .env, would exit 2 and restart forever)."""
    demo = active(services, "demo")
    assert not set(demo) & LIVE_SERVICES
    daemons = {name: s for name, s in demo.items() if runs_daemon(s)}
    assert set(daemons) == {"syncd-demo"}
    for name, service in daemons.items():
        env = environment(service)
        assert env.get("WORKOS_API_KEY") or env.get("GITHUB_REPOS"), f"{name} names no source"
        assert "env_file" not in service, name
    for name in active(services):  # no profile at all: only what both ways share
        assert not runs_daemon(services[name]), f"{name} would start without a profile"


def test_published_ports_listen_on_loopback_only(services: dict[str, Service]) -> None:
    published = {name: ports(s) for name, s in services.items() if ports(s)}
    assert "syncd" in published and "jaeger" in published
    for name, found in published.items():
        for port in found:
            assert port.host_ip == "127.0.0.1", f"{name} publishes {port.container} on every interface"


def test_images_are_pinned_to_exact_tags(services: dict[str, Service]) -> None:
    expected = {
        "postgres": r"postgres:17\.\d+(-bookworm|-trixie|-alpine[\d.]*)?",
        "jaeger": r"jaegertracing/jaeger:2\.\d+\.\d+",
        "demo-db": r"postgres:17\.\d+(-bookworm|-trixie|-alpine[\d.]*)?",
    }
    for name, pattern in expected.items():
        assert re.fullmatch(pattern, services[name]["image"]), f"{name}: {services[name]['image']}"
    for name, service in services.items():
        image = str(service["image"])
        assert not image.endswith(":latest"), f"{name}: {image}"
        if not uses_syncd_image(service):
            assert re.search(r":\d+\.\d+", image), f"{name} pulls {image!r} without an exact version tag"
    assert services["demo-db"]["image"] == services["postgres"]["image"], "one Postgres image, pulled once"


def test_syncd_image_services_share_one_build(services: dict[str, Service]) -> None:
    built = {name: s for name, s in services.items() if uses_syncd_image(s)}
    assert set(built) == {"migrate", "syncd", "workos-sim", "github-sim", "syncd-demo"}
    assert {str(s["build"]) for s in built.values()} == {"."}
    assert (ROOT / "Dockerfile").is_file()
    assert len({s["image"] for s in built.values()}) == 1, "one tag, so the image is built once"
    assert all(s.get("init") is True for s in built.values()), "tini forwards SIGTERM and reaps children"


def test_named_volumes_are_declared(compose: dict[str, Any], services: dict[str, Service]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            source = str(volume).split(":")[0]
            if not source.startswith((".", "/", "~")):
                assert source in declared, f"{name} mounts undeclared volume {source}"
    assert any("/var/lib/postgresql/data" in str(v) for v in services["postgres"]["volumes"])


# ---- the Compose file: wiring -----------------------------------------------------------------------


def test_ports(services: dict[str, Service], final_stage: list[Instruction]) -> None:
    exposed = {int(p) for p in only(final_stage, "EXPOSE").args.split()}
    assert [p.container for p in ports(services["syncd"])] == [8080]
    assert 8080 in exposed
    for name, service in services.items():
        if runs_daemon(service):
            assert environment(service)["SYNCD_HTTP_PORT"] == "8080", name
            assert {p.container for p in ports(service)} <= exposed, name
    assert {p.container for p in ports(services["jaeger"])} == {16686, 4317, 4318}
    assert {p.container for p in ports(services["workos-sim"])} == {8001}
    assert {p.container for p in ports(services["github-sim"])} == {8002}
    published = [(p.host_ip, p.host) for s in services.values() for p in ports(s) if p.host]
    assert len(published) == len(set(published)), "two services publish the same host port"


def test_every_daemon_exports_traces_to_jaeger(services: dict[str, Service]) -> None:
    daemons = {name: environment(s) for name, s in services.items() if runs_daemon(s)}
    assert set(daemons) == {"syncd", "syncd-demo"}
    for name, env in daemons.items():
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318", name
        assert "jaeger" in depends_on(services[name]), name
    names = [env["OTEL_SERVICE_NAME"] for env in daemons.values()]
    assert len(set(names)) == len(names), "each daemon's traces are told apart in Jaeger"


def test_every_url_names_a_service_it_waits_for_on_a_port_it_listens_on(services: dict[str, Service]) -> None:
    checked = 0
    for name, service in services.items():
        for variable, url in urls(environment(service)):
            parts = urlsplit(url)
            if parts.hostname not in services:
                continue
            checked += 1
            assert parts.hostname in waits_for(services, name), f"{name}.{variable} -> {parts.hostname}"
            port = parts.port
            assert port in listening_ports(services[parts.hostname]), f"{name}.{variable}: port {port}"
    assert checked >= 8


def test_database_urls_match_postgres(services: dict[str, Service]) -> None:
    pg = environment(services["postgres"])
    databases = {}
    for name, service in services.items():
        url = environment(service).get("DATABASE_URL")
        if url is None:
            continue
        parts = urlsplit(interpolate(url))
        assert parts.scheme == "postgresql+psycopg", f"{name}: psycopg 3, not SQLAlchemy's psycopg2 default"
        assert parts.username == pg["POSTGRES_USER"], name
        assert interpolate(url, {"POSTGRES_PASSWORD": "s3cret"}).count("s3cret") == 1
        assert "${POSTGRES_PASSWORD" in url, f"{name}: the password comes from POSTGRES_PASSWORD"
        databases[name] = parts.path.lstrip("/")
    assert databases["syncd"] == databases["migrate"] == pg["POSTGRES_DB"]
    # The demo must not share syncd's cursors and mirror tables; demo-db creates its database.
    assert databases["syncd-demo"] != databases["syncd"]
    assert f"createdb {databases['syncd-demo']}" in " ".join(command(services["demo-db"]))


def test_depends_on_conditions(services: dict[str, Service]) -> None:
    assert depends_on(services["migrate"])["postgres"] == "service_healthy"
    syncd = depends_on(services["syncd"])
    assert syncd["migrate"] == "service_completed_successfully"
    assert syncd["jaeger"] == "service_started"
    demo = depends_on(services["syncd-demo"])
    assert demo["workos-sim"] == demo["github-sim"] == "service_healthy"
    assert demo["demo-db"] == "service_completed_successfully"
    assert depends_on(services["demo-db"]) == {"postgres": "service_healthy"}


def test_dependencies_can_meet_their_conditions(services: dict[str, Service]) -> None:
    for name, service in services.items():
        for dep, condition in depends_on(service).items():
            target = services[dep]
            if condition == "service_healthy":
                has_check = "test" in (target.get("healthcheck") or {}) or (
                    uses_syncd_image(target) and not (target.get("healthcheck") or {}).get("disable")
                )
                assert has_check, f"{name} waits for {dep} to be healthy, but {dep} has no health check"
            if condition == "service_completed_successfully":
                assert target.get("restart") == "no", f"{dep} is a one-shot and must not restart"
            if not service.get("profiles"):
                assert not target.get("profiles"), f"{name} (always on) depends on {dep} (profile only)"
            elif target.get("profiles"):
                assert set(target["profiles"]) >= set(service["profiles"]), f"{name} depends on {dep}, " \
                    "which its profile does not start"


def test_healthchecks(services: dict[str, Service]) -> None:
    postgres = services["postgres"]["healthcheck"]["test"]
    assert postgres[:2] == ["CMD", "pg_isready"]
    jaeger = services["jaeger"]["healthcheck"]
    # Jaeger v2's health-check extension, inside the container; busybox wget exits non-zero on an error.
    assert jaeger["test"][:2] == ["CMD", "wget"] and "http://127.0.0.1:13133/status" in jaeger["test"]
    assert "--spider" in jaeger["test"] and seconds(jaeger["timeout"]) < seconds(jaeger["interval"])
    assert any(a.startswith(("--host=", "-h")) for a in postgres), "over TCP, not the init-time socket"
    for name in ("workos-sim", "github-sim"):
        service = services[name]
        port = option(command(service), "--port")
        test = " ".join(service["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/health'" in test, name
    for name in ("syncd", "syncd-demo"):
        assert "healthcheck" not in services[name], f"{name} uses the image's HEALTHCHECK (syncd check)"
    assert services["migrate"]["healthcheck"] == {"disable": True}


def test_commands(services: dict[str, Service]) -> None:
    assert command(services["migrate"]) == ["syncd", "migrate"]
    assert command(services["syncd"]) == ["syncd", "run"]
    assert command(services["syncd-demo"]) == ["syncd", "run"]
    workos = command(services["workos-sim"])
    assert workos[:3] == ["syncd", "simulate", "workos"]
    assert option(workos, "--host") == "0.0.0.0"
    assert int(option(workos, "--events")) > 0 and float(option(workos, "--live-rate")) > 0
    github = command(services["github-sim"])
    assert github[:3] == ["syncd", "simulate", "github"]
    assert option(github, "--host") == "0.0.0.0"


def test_restart_and_graceful_stop(services: dict[str, Service]) -> None:
    for name, service in services.items():
        if runs_daemon(service):
            assert service["restart"] == "unless-stopped", name
            # syncd exits within 10 s of SIGTERM; the grace period must outlast that before SIGKILL.
            assert seconds(service["stop_grace_period"]) > 10, name
    assert services["migrate"]["restart"] == "no"


def test_env_file_is_optional_and_the_demo_ignores_it(services: dict[str, Service]) -> None:
    for name in ("syncd", "migrate"):
        assert services[name]["env_file"] == [{"path": ".env", "required": False}], name
    assert "env_file" not in services["syncd-demo"], "the demo must not pick up real credentials"


def test_demo_points_at_the_simulators(services: dict[str, Service]) -> None:
    env = environment(services["syncd-demo"])
    assert env["WORKOS_BASE_URL"] == f"http://workos-sim:{option(command(services['workos-sim']), '--port')}"
    assert env["GITHUB_BASE_URL"] == f"http://github-sim:{option(command(services['github-sim']), '--port')}"
    assert env["WORKOS_API_KEY"] == "sk_test_simulator"
    assert env["GITHUB_TOKEN"] == "ghp_simulator"
    assert env["GITHUB_REPOS"] == "acme/web,acme/api"


# ---- configuration names and secrets ----------------------------------------------------------------


def syncd_variables(services: dict[str, Service]) -> set[str]:
    """Variables the Compose file hands to syncd processes, plus those it reads from the shell/.env."""
    names = set().union(*(environment(s) for s in services.values() if uses_syncd_image(s)))
    return names | referenced_variables(COMPOSE.read_text())


def documented_in(sample: str) -> set[str]:
    """``NAME=`` lines, commented out or not."""
    return set(re.findall(r"^[#\s]*([A-Z][A-Z0-9_]*)=", sample, flags=re.MULTILINE))


def test_compose_sets_only_variables_syncd_reads(services: dict[str, Service]) -> None:
    from syncd.settings import KNOWN_VARIABLES

    unknown = syncd_variables(services) - KNOWN_VARIABLES
    assert not unknown, f"syncd does not read {sorted(unknown)} (typo?)"


def test_every_variable_compose_sets_is_documented_in_sample_env(services: dict[str, Service]) -> None:
    if not SAMPLE_ENV.exists():
        pytest.skip("sample.env not written yet")
    missing = syncd_variables(services) - documented_in(SAMPLE_ENV.read_text())
    assert not missing, f"not documented in sample.env: {sorted(missing)}"


def test_no_secrets_other_than_placeholder_defaults(services: dict[str, Service]) -> None:
    for name, service in services.items():
        for variable, raw in environment(service).items():
            if SECRET_NAME.search(variable):
                assert interpolate(raw) in PLACEHOLDERS, f"{name}.{variable} holds a credential"
                if raw not in PLACEHOLDERS:
                    assert re.fullmatch(r"\$\{\w+:-\w+\}", raw), (
                        f"{name}.{variable}: interpolate, with a default"
                    )
            for _, url in urls({variable: raw}):
                password = urlsplit(url).password
                assert password is None or password in PLACEHOLDERS, f"{name}.{variable} embeds a password"
    for path in (DOCKERFILE, COMPOSE, DOCKERIGNORE):
        found = REAL_SECRET.search(path.read_text())
        assert found is None, f"{path.name} contains something shaped like a credential: {found[0]!r}"


def test_fake_credentials_appear_only_in_the_demo(services: dict[str, Service]) -> None:
    for name, service in services.items():
        if name in DEMO_SERVICES:
            continue
        values = set(environment(service).values())
        assert not values & {"sk_test_simulator", "ghp_simulator"}, name
