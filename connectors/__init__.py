"""The built-in connectors: ``connectors.workos``, ``connectors.github``, ``connectors.sql``, ``connectors.stripe``.

Each package exposes a ``provider`` object (see ``syncd.contracts.Provider``) and trigger helpers for
workflows. They register themselves in the ``syncd.connectors`` entry-point group (pyproject.toml), as
third-party connectors do; ``syncd.plugins.load_providers`` finds them there.
"""
