"""The container runs your workflows: the override file that points Compose at your database and mounts
your package, and the derived image that installs it, checked without a Docker engine.

The override is parsed with PyYAML (with Compose's ``!override``/``!reset`` tags) and merged onto
docker-compose.yml by Compose's rules for the keys it uses, then checked like the main file. The derived
image's package is installed by ``pip install`` as its Dockerfile does (into a directory put on
PYTHONPATH instead of the image's virtualenv), and the mounted layout is reproduced on disk; in both,
``SYNCD_WORKFLOWS=acme_workflows.workflows syncd once`` imports the package and runs it against the
WorkOS simulator — the command the container runs.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from simulators.workos import WorkOSSimulator
from syncd.settings import KNOWN_VARIABLES
from tests.test_container import (
    COMPOSE,
    PLACEHOLDERS,
    REAL_SECRET,
    SECRET_NAME,
    Service,
    active,
    command,
    copy_sources,
    depends_on,
    env_assignments,
    environment,
    exec_form,
    parse_dockerfile,
    referenced_variables,
    urls,
    waits_for,
)

ROOT = Path(__file__).resolve().parents[1]
OVERRIDE = ROOT / "docker-compose.override.example.yml"
EXAMPLE = ROOT / "examples" / "your-workflows"
KEY = "sk_test_container_wf_2c7d"
USER_DB = "postgresql+psycopg://acme:pw-from-env@db.internal:5432/app"


# ---- Compose's merge of an override file ------------------------------------------------------------


class Override:
    """``!override``: the value replaces the base's instead of merging into it."""

    def __init__(self, value: Any) -> None:
        self.value = value


class Reset:
    """``!reset``: the key is removed from the base."""


class ComposeLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no type stubs
    pass


def _override(loader: yaml.SafeLoader, node: yaml.Node) -> Override:
    if isinstance(node, yaml.MappingNode):
        return Override(loader.construct_mapping(node, deep=True))
    if isinstance(node, yaml.SequenceNode):
        return Override(loader.construct_sequence(node, deep=True))
    return Override(loader.construct_scalar(node))


ComposeLoader.add_constructor("!override", _override)
ComposeLoader.add_constructor("!reset", lambda loader, node: Reset())

#: Sequences Compose replaces rather than concatenates.
REPLACED = {"command", "entrypoint", "test", "profiles"}


def merge(base: Any, override: Any, key: str = "") -> Any:
    """Compose's merge for what the override uses: mappings key by key, ``!override`` replaces,
    ``!reset`` removes, ``ports``/``volumes``/``env_file`` sequences are concatenated without duplicates,
    commands and profiles replaced, scalars replaced."""
    if isinstance(override, Override):
        return copy.deepcopy(override.value)
    if isinstance(base, dict) and isinstance(override, dict):
        merged = copy.deepcopy(base)
        for k, v in override.items():
            if isinstance(v, Reset):
                merged.pop(k, None)
            elif k in merged:
                merged[k] = merge(merged[k], v, k)
            else:
                merged[k] = merge(None, v, k)
        return merged
    if isinstance(base, list) and isinstance(override, list) and key not in REPLACED:
        return base + [item for item in override if item not in base]
    if isinstance(override, dict):
        return {k: merge(None, v, k) for k, v in override.items() if not isinstance(v, Reset)}
    return copy.deepcopy(override)


@pytest.fixture(scope="module")
def overridden() -> dict[str, Service]:
    base = yaml.safe_load(COMPOSE.read_text())
    override = yaml.load(OVERRIDE.read_text(), Loader=ComposeLoader)  # ComposeLoader is a SafeLoader
    extra = {k for k in override if k not in ("services", "volumes") and not k.startswith("x-")}
    assert not extra, "an override changes services (and volumes), nothing else"
    services = merge(base, override)["services"]
    assert isinstance(services, dict)
    return services


def interpolate_required(value: str, environ: dict[str, str]) -> str:
    """Compose's interpolation including ``${VAR:?message}``, which fails when VAR is unset or empty."""
    def one(match: re.Match[str]) -> str:
        name, op, arg = match[1], match[2], match[3]
        if op == ":?" and not environ.get(name):
            raise LookupError(f"{name}: {arg}")
        if op == ":-":
            return environ.get(name) or arg
        return environ.get(name, "")

    return re.sub(r"\$\{(\w+)(?:(:\?|:-)([^}]*))?\}", one, value)


# ---- the override file --------------------------------------------------------------------------------


def test_the_override_points_syncd_at_the_database_in_env(overridden: dict[str, Service]) -> None:
    for name in ("migrate", "syncd"):
        raw = environment(overridden[name])["DATABASE_URL"]
        assert interpolate_required(raw, {"DATABASE_URL": USER_DB}) == USER_DB, name
        with pytest.raises(LookupError, match=r"DATABASE_URL: set DATABASE_URL in \.env"):
            interpolate_required(raw, {})  # Compose stops with that message instead of guessing
        # the rest of the shared environment is kept
        assert environment(overridden[name])["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"


def test_with_the_override_live_starts_no_bundled_postgres(overridden: dict[str, Service]) -> None:
    live = active(overridden, "live")
    assert {"migrate", "syncd", "jaeger"} <= set(live) and "postgres" not in live
    for name, service in live.items():
        missing = set(depends_on(service)) - set(live)
        assert not missing, f"{name} depends on {missing}, which --profile live does not start"
        for variable, url in urls(environment(service)):
            assert "@postgres:" not in url, f"{name}.{variable} still names the bundled PostgreSQL"
    assert depends_on(live["syncd"])["migrate"] == "service_completed_successfully"
    demo = active(overridden, "demo")  # the demo keeps its own database on the bundled server
    assert {"postgres", "demo-db", "syncd-demo"} <= set(demo)
    for name, service in demo.items():
        assert set(depends_on(service)) <= set(demo), name
        assert waits_for(overridden, name) <= set(demo), name


def test_the_override_mounts_the_package_directory_on_pythonpath(overridden: dict[str, Service]) -> None:
    syncd = overridden["syncd"]
    [volume] = [str(v) for v in syncd["volumes"]]
    source, target, mode = volume.split(":")
    assert source == "./workflows" and mode == "ro"
    assert environment(syncd)["PYTHONPATH"] == target
    assert command(syncd) == ["syncd", "run"]  # still the image's daemon
    assert "env_file" in syncd, "SYNCD_WORKFLOWS and the credentials still come from .env"


def test_the_override_sets_only_known_variables_and_no_secret(overridden: dict[str, Service]) -> None:
    text = OVERRIDE.read_text()
    for name in ("migrate", "syncd"):
        names = set(environment(overridden[name])) - {"PYTHONPATH"}  # read by Python, not by syncd
        assert names <= KNOWN_VARIABLES, sorted(names - KNOWN_VARIABLES)
        for variable, raw in environment(overridden[name]).items():
            if SECRET_NAME.search(variable):
                assert raw in PLACEHOLDERS, f"{name}.{variable}"
    assert referenced_variables(text) <= KNOWN_VARIABLES
    assert not REAL_SECRET.search(text)
    assert not re.search(r"://\w+:(?!PASSWORD@)[^@\s]+@", text), "a URL with a real-looking password"


# ---- the derived image ----------------------------------------------------------------------------------


def test_the_example_dockerfile_derives_from_syncds_image() -> None:
    instructions = parse_dockerfile((EXAMPLE / "Dockerfile").read_text())
    base_tag = yaml.safe_load(COMPOSE.read_text())["services"]["syncd"]["image"]
    [arg] = [i for i in instructions if i.keyword == "ARG"]
    assert arg.args == f"SYNCD_IMAGE={base_tag}"  # the tag docker-compose.yml builds syncd under
    assert [i.args for i in instructions if i.keyword == "FROM"] == ["${SYNCD_IMAGE}"]
    users = [i.args for i in instructions if i.keyword == "USER"]
    assert users[-1] == "10001:10001", "back to the base image's non-root user"
    installs = [i.args for i in instructions if i.keyword == "RUN" and "pip install" in i.args]
    assert installs and all(a.startswith("/opt/syncd/bin/pip install --no-cache-dir") for a in installs)
    for source in copy_sources(instructions):
        assert (EXAMPLE / source).exists(), source
    module = env_assignments(instructions)["SYNCD_WORKFLOWS"]
    assert (EXAMPLE / (module.replace(".", "/") + ".py")).is_file()
    # run, health check, stop signal: the base image's
    assert not {"CMD", "ENTRYPOINT", "HEALTHCHECK", "STOPSIGNAL"} & {i.keyword for i in instructions}
    assert exec_form('["syncd", "run"]')  # (the base image's CMD, checked in test_container.py)


# ---- running the package as the container does -----------------------------------------------------------


def run_once(cwd: Path, pythonpath: list[Path], sim: WorkOSSimulator, db: Path,
             ) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd), "LANG": "C.UTF-8",
           "PYTHONPATH": os.pathsep.join(str(p) for p in [ROOT, *pythonpath]), "PYTHONDONTWRITEBYTECODE": "1",
           "SYNCD_HTTP_PORT": "0", "DATABASE_URL": f"sqlite:///{db}", "SYNCD_WORKFLOWS": "acme_workflows.workflows",
           "WORKOS_API_KEY": KEY, "WORKOS_BASE_URL": sim.url}
    return subprocess.run([sys.executable, "-m", "syncd", "once"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def acme_database(path: Path) -> Path:
    """The team's database with the table their migrations create (see acme_workflows.workflows)."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("CREATE TABLE acme_signups (user_id TEXT PRIMARY KEY, signed_up_at TIMESTAMP NOT NULL)")
        conn.commit()
    finally:
        conn.close()
    return path


def assert_the_workflow_ran(db: Path, sim: WorkOSSimulator) -> None:
    created = {e["data"]["id"] for e in sim.events() if e["event"] == "user.created"}
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = {r[0] for r in conn.execute("SELECT user_id FROM acme_signups")}
        runs = conn.execute("SELECT status, count(*) FROM syncd_runs WHERE workflow = 'acme.record_signup' "
                            "GROUP BY status").fetchall()
    finally:
        conn.close()
    assert created and rows == created
    assert runs == [("succeeded", len(created))]


@pytest.fixture
def sim() -> Any:
    with WorkOSSimulator(events=150, seed=17, api_key=KEY) as simulator:
        yield simulator


@pytest.mark.slow
def test_the_derived_images_package_is_imported_and_run_by_syncd_once(tmp_path: Path, sim: WorkOSSimulator,
                                                                       ) -> None:
    site = tmp_path / "site-packages"  # stands in for the image's /opt/syncd (syncd is on PYTHONPATH)
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                              "--no-cache-dir", "--no-deps", "--target", str(site),
                              str(EXAMPLE)], capture_output=True, text=True, timeout=180, check=False)
    assert install.returncode == 0, install.stderr
    assert (site / "acme_workflows" / "workflows.py").is_file()
    # Without the package (syncd's image alone) the module cannot be imported: exit 2, named.
    missing = run_once(tmp_path, [], sim, acme_database(tmp_path / "missing.db"))
    assert missing.returncode == 2 and "SYNCD_WORKFLOWS" in missing.stderr, missing.stderr
    db = acme_database(tmp_path / "acme.db")
    result = run_once(tmp_path, [site], sim, db)
    assert result.returncode == 0, result.stderr
    assert_the_workflow_ran(db, sim)


@pytest.mark.slow
def test_the_mounted_package_is_imported_and_run_by_syncd_once(tmp_path: Path, sim: WorkOSSimulator,
                                                                overridden: dict[str, Service]) -> None:
    # ./workflows in the project directory, mounted where the override's PYTHONPATH points
    source, _, _ = str(overridden["syncd"]["volumes"][0]).split(":")
    workflows = tmp_path / source
    shutil.copytree(EXAMPLE / "acme_workflows", workflows / "acme_workflows")
    db = acme_database(tmp_path / "acme.db")
    result = run_once(tmp_path, [workflows], sim, db)
    assert result.returncode == 0, result.stderr
    assert_the_workflow_ran(db, sim)
