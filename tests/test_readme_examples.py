"""Documentation that runs: every Python and SQL block of the README is a file of a fresh project (its first
line names it: ``# myapp/workflows.py``, ``-- myapp/schema.sql``), the SQL is applied as that project's
schema the way the README tells users to, and the project's tests run with pytest in a subprocess: the
README's own (``tests/test_welcome.py``, on ``syncd.testing``) and the ones below, which drive every other
example module, and every module of ``syncd/examples/``, through a ``syncd.testing.Sandbox``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```\n", re.S | re.M)
HEADER = {"python": re.compile(r"^# ([\w/]+\.py)\n"), "sql": re.compile(r"^-- ([\w/]+\.sql)\n")}
TIMEOUT = 300

#: What the README's examples should do, as a user's tests would check them (written into the project).
DRIVER = '''
from pathlib import Path

from syncd.testing import Sandbox

SQL = [p.read_text() for p in sorted(Path("myapp").glob("*.sql"))]


def test_issues_to_crm_runs_on_each_issue_version(tmp_path):
    with Sandbox("myapp.workflows", path=tmp_path, schema=SQL, repos={"calcom/cal.com": 3}) as box:
        assert box.once().exit_code == 0
        box.github_changes("calcom/cal.com", 2)
        assert box.once().exit_code == 0
        runs = box.runs("issues-to-crm")
        assert len(runs) >= 3 and {r.status for r in runs} == {"succeeded"}


def test_the_batch_handler_leaves_what_the_per_event_one_would(tmp_path):
    with Sandbox("myapp.crm", path=tmp_path, schema=SQL) as box:
        made = box.workos_events(400)
        assert box.once().exit_code == 0
        users = {}
        for event in made:
            if event["event"] in ("user.created", "user.updated"):
                users[event["data"]["id"]] = event["data"]["email"]
        assert users
        assert dict(box.query("SELECT id, email FROM crm_users")) == users
        assert {r.status for r in box.runs("users-to-crm")} == {"succeeded"}


def test_a_row_inserted_into_users_runs_the_table_workflow(tmp_path):
    with Sandbox("myapp.signups", path=tmp_path, schema=SQL) as box:
        box.sql("INSERT INTO users (id, email, name) VALUES (1, 'ada@example.com', 'Ada')")
        assert box.once().exit_code == 0
        assert [(r.event_id, r.status) for r in box.runs("on-signup")] == [("1", "succeeded")]


def test_the_connector_sketch_is_a_provider():
    import acme_syncd
    from syncd.plugins import _not_a_provider

    provider = acme_syncd.Provider()
    assert _not_a_provider(provider) is None
    assert provider.sources({}, None) is None  # a sketch: its methods are documented, not written


def test_only_the_given_modules_workflows_run(tmp_path):
    import myapp.crm  # registered in the default registry, as another test of the suite would have

    with Sandbox("myapp.workflows", path=tmp_path, schema=SQL) as box:
        assert {wf.name for wf in box.registry.all()} == {"welcome", "issues-to-crm"}


def test_every_shipped_example_passes_the_start_up_checks():
    import importlib
    import pkgutil

    import syncd.examples
    from syncd.plugins import load_providers
    from syncd.workflows import Registry, default_registry
    from syncd.workflows.validate import check

    names = [m.name for m in pkgutil.iter_modules(syncd.examples.__path__)]
    assert {"account_federation", "welcome_email"} <= set(names)
    for name in names:
        importlib.import_module(f"syncd.examples.{name}")
    shipped = Registry()
    for wf in default_registry.all():
        if wf.fn.__module__.startswith("syncd.examples."):
            shipped.add(wf)
    assert len(shipped) >= 2
    check(shipped, load_providers(), {})


def test_shipped_example_account_federation(tmp_path):
    with Sandbox("syncd.examples.account_federation", path=tmp_path, integrations=["intercom", "close"]) as box:
        box.workos_event("user.created", {"id": "user_7", "email": "mei@example.com", "first_name": "Mei"})
        assert box.once().exit_code == 0, box.runs()
        assert [r.status for r in box.runs("account-federation")] == ["succeeded"]
        assert {c.integration for c in box.calls()} == {"intercom", "close", "slack"}
'''


def blocks(text: str) -> list[tuple[str, str]]:
    return [(lang, code) for lang, code in FENCE.findall(text)]


def test_every_python_block_of_the_readme_names_its_file() -> None:
    python = [code for lang, code in blocks(README.read_text()) if lang == "python"]
    assert len(python) >= 6
    unnamed = [code.splitlines()[0] for code in python if not HEADER["python"].match(code)]
    assert unnamed == []


def test_the_readmes_examples_run(tmp_path: Path) -> None:
    project = tmp_path / "project"
    written: list[str] = []
    for lang, code in blocks(README.read_text()):
        header = HEADER.get(lang)
        found = header.match(code) if header else None
        if found is None:
            continue
        path = project / found.group(1)
        path.parent.mkdir(parents=True, exist_ok=True)
        assert not path.exists(), f"two README blocks name {found.group(1)}"
        path.write_text(code)
        written.append(found.group(1))
    for package in ("myapp", "tests"):
        (project / package / "__init__.py").touch()
    assert {"myapp/workflows.py", "myapp/schema.sql", "tests/test_welcome.py"} <= set(written)
    (project / "tests" / "test_docs_examples.py").write_text(textwrap.dedent(DRIVER))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "PYTHONPATH": os.pathsep.join([str(project), str(ROOT)]), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error",
                           "tests"], cwd=project, env=env, capture_output=True, text=True, timeout=TIMEOUT,
                          check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert re.search(r"\b10 passed\b", done.stdout), done.stdout[-2000:]
