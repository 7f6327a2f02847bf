"""Simulated providers for tests, ``syncd demo`` and the benchmarks: real HTTP servers on loopback.

``simulators.workos`` (the WorkOS Events API), ``simulators.github`` (GitHub's issue listing) and
``simulators.sink`` (a recording sink for outbound integrations), sharing ``simulators.httpserver``.
They are fakes of the providers, never runtime code: nothing in ``syncd`` or ``connectors`` imports them
except the composition roots that offer them (``syncd simulate``, ``syncd demo``).
"""
