"""Connector discovery through the ``syncd.connectors`` entry-point group.

Third-party plugins here are real distributions: a ``*.dist-info`` folder with an ``entry_points.txt``
written under ``tmp_path`` and put on ``sys.path``, which ``importlib.metadata`` finds as it finds any
installed package.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

import connectors.github
import connectors.sql
import connectors.stripe
import connectors.workos
from syncd import cli
from syncd.errors import ConfigError
from syncd.plugins import GROUP, load_providers

_serial = itertools.count()
#: Example connector packages ``make install`` installs (``examples/``; ``test_example_connector.py``).
EXAMPLES = {"jsonl"}

GOOD_PLUGIN = '''
class _Provider:
    name = "acme"

    def sources(self, environ, registry):
        return []

    def builtin_workflows(self, registry):
        pass


provider = _Provider()
'''


def install_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, *, entry: str = "acme",
                   attribute: str = "provider") -> str:
    """Write module ``source`` and a distribution registering ``entry = module:attribute``; returns the
    module's name (unique per call, so that no earlier test's import is reused)."""
    module = f"syncd_test_plugin_{next(_serial)}"
    root = tmp_path / f"site_{module}"
    root.mkdir()
    (root / f"{module}.py").write_text(source)
    info = root / f"{module}-1.0.dist-info"  # the folder's stem names the distribution
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{GROUP}]\n{entry} = {module}:{attribute}\n")
    monkeypatch.syspath_prepend(str(root))
    return module


def test_the_builtin_connectors_register_through_the_entry_point_group() -> None:
    providers = [p for p in load_providers() if p.name not in EXAMPLES]
    assert [p.name for p in providers] == ["workos", "github", "sql", "stripe"]
    assert providers[0] is connectors.workos.provider
    assert providers[1] is connectors.github.provider
    assert providers[2] is connectors.sql.provider
    assert providers[3] is connectors.stripe.provider


def test_a_third_party_plugin_is_found_after_the_builtins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_plugin(tmp_path, monkeypatch, GOOD_PLUGIN, entry="acme")
    install_plugin(tmp_path, monkeypatch, GOOD_PLUGIN.replace('"acme"', '"aardvark"'), entry="aardvark")
    names = [p.name for p in load_providers() if p.name not in EXAMPLES]
    assert names == ["workos", "github", "sql", "stripe", "aardvark", "acme"]


@pytest.mark.parametrize(("source", "attribute", "expected"), [
    ("raise RuntimeError('boom\\nsecond line')\n", "provider", "failed to import: RuntimeError: boom"),
    ("import syncd_no_such_module_anywhere\n", "provider",
     "failed to import: ModuleNotFoundError: No module named 'syncd_no_such_module_anywhere'"),
    ("provider = 1\n", "missing", "failed to import: AttributeError"),
    ("provider = 42\n", "provider", "is not a syncd provider: int has no 'name' string"),
    ("class P:\n    name = 'x'\n    def sources(self, environ, registry): return []\nprovider = P()\n",
     "provider", "is not a syncd provider: P has no builtin_workflows() method"),
])
def test_a_broken_plugin_is_one_clear_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str,
                                                  attribute: str, expected: str) -> None:
    module = install_plugin(tmp_path, monkeypatch, source, entry="broken", attribute=attribute)
    with pytest.raises(ConfigError) as caught:
        load_providers()
    message = str(caught.value)
    assert message.startswith(f"{GROUP}: entry point 'broken' ({module}:{attribute}) ")
    assert expected in message
    assert "\n" not in message


def test_two_packages_registering_one_name_is_a_config_error(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    install_plugin(tmp_path, monkeypatch, GOOD_PLUGIN, entry="workos")
    with pytest.raises(ConfigError, match="entry point 'workos' is registered twice"):
        load_providers()


def test_the_cli_exits_2_naming_a_broken_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    install_plugin(tmp_path, monkeypatch, "import syncd_no_such_module_anywhere\n", entry="broken")
    code = cli.main(["check"], environ={"DATABASE_URL": f"sqlite:///{tmp_path / 'syncd.db'}"})
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("syncd: configuration error: syncd.connectors: entry point 'broken'"), err
    assert err.count("\n") == 1


# ---- who may import whom ---------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
#: The composition roots, which offer the built-in connectors and simulators, the shipped example
#: workflows (user code that happens to live in the package), and ``syncd.testing`` (the simulators, for
#: users' own tests).
COMPOSITION_ROOTS = ("syncd/cli/", "syncd/ops/demo.py", "syncd/examples/", "syncd/testing/")


def imported_packages(path: Path) -> set[str]:
    """Top-level packages a module imports (``import a.b`` and ``from a.b import c`` give ``a``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_the_core_imports_no_connector_and_no_simulator() -> None:
    offenders = []
    for path in sorted((ROOT / "syncd").rglob("*.py")):
        where = path.relative_to(ROOT).as_posix()
        if where.startswith(COMPOSITION_ROOTS):
            continue
        if imported_packages(path) & {"connectors", "simulators"}:
            offenders.append(where)
    assert offenders == []


def test_the_simulators_import_nothing_of_syncd_or_the_connectors() -> None:
    """A simulator that shared code with the client could agree with it by accident."""
    offenders = [path.relative_to(ROOT).as_posix() for path in sorted((ROOT / "simulators").rglob("*.py"))
                 if imported_packages(path) & {"syncd", "connectors"}]
    assert offenders == []
