"""``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG``: which traces are kept.

Contract:

- The standard values are honoured: ``always_on``, ``always_off``, ``traceidratio``, and
  ``parentbased_always_on`` (the default), ``parentbased_always_off``, ``parentbased_traceidratio``.
  ``…traceidratio`` keeps the share ``OTEL_TRACES_SAMPLER_ARG`` (0 to 1, default 1) of traces. Any other
  value, or an argument that is not a number from 0 to 1, is a ``ConfigError`` naming its variable
  (``syncd`` exits 2); the SDK would only log a warning and keep everything.
- **An event's trace is sampled as a whole, on its trace id alone** (:meth:`SamplerChoice.keeps`: the
  root decision of the chosen sampler, which for the ratio samplers is the SDK's rule on the id's low 64
  bits). Every later attempt of its runs, on any replica, a resumed sleep and a replay continue the trace
  stored on the run (``syncd_runs.trace_id``) and so reach the same decision: a run's spans are exported
  exactly when its event's are. The trace id is stored and logged either way, so log lines stay joined
  to their event even when its trace was not kept.
- A tick's trace is sampled by its own id; an event trace's link to its page is written only when the
  page's trace was kept.

No OpenTelemetry import at module level: settings are read by every command.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from syncd.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.sampling import Sampler

SAMPLER_VAR = "OTEL_TRACES_SAMPLER"
ARG_VAR = "OTEL_TRACES_SAMPLER_ARG"
DEFAULT_SAMPLER = "parentbased_always_on"
SAMPLERS = ("always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off",
            "parentbased_traceidratio")
#: Standard values the Python SDK has no sampler for.
_UNSUPPORTED = ("jaeger_remote", "parentbased_jaeger_remote", "xray")
_LOW64 = (1 << 64) - 1


@dataclass(frozen=True)
class SamplerChoice:
    """The sampler ``OTEL_TRACES_SAMPLER`` names and its ratio (1.0 unless it is a ratio sampler)."""

    name: str = DEFAULT_SAMPLER
    ratio: float = 1.0

    @property
    def root(self) -> str:
        """The decision for a trace's root: ``always_on``, ``always_off`` or ``traceidratio``."""
        return self.name.removeprefix("parentbased_")

    @property
    def bound(self) -> int:
        """The SDK's ``TraceIdRatioBased`` bound: a trace is kept when its id's low 64 bits are below it."""
        return round(self.ratio * (_LOW64 + 1))

    def keeps(self, trace_id: int) -> bool:
        """Whether the trace ``trace_id`` is sampled (exported), decided by its id alone."""
        root = self.root
        if root == "always_on":
            return True
        if root == "always_off":
            return False
        return trace_id & _LOW64 < self.bound

    def sdk_sampler(self) -> Sampler:
        """The SDK sampler making the same decisions."""
        from opentelemetry.sdk.trace import sampling

        roots: dict[str, Sampler] = {"always_on": sampling.ALWAYS_ON, "always_off": sampling.ALWAYS_OFF}
        root = roots.get(self.root) or sampling.TraceIdRatioBased(self.ratio)
        return sampling.ParentBased(root) if self.name.startswith("parentbased_") else root


#: ``OTEL_TRACES_SAMPLER`` unset.
DEFAULT_CHOICE = SamplerChoice()


def sampler_choice(environ: Mapping[str, str]) -> SamplerChoice:
    """The sampler the environment asks for; ConfigError naming the variable when it cannot be honoured."""
    raw = (environ.get(SAMPLER_VAR) or "").strip()
    name = raw.lower() or DEFAULT_SAMPLER
    if name not in SAMPLERS:
        why = "is not supported by syncd" if name in _UNSUPPORTED else "is not a sampler"
        raise ConfigError(SAMPLER_VAR, f"{raw[:60]!r} {why}; expected one of {', '.join(SAMPLERS)}")
    if not name.endswith("traceidratio"):
        return SamplerChoice(name)
    arg = (environ.get(ARG_VAR) or "").strip()
    if not arg:
        return SamplerChoice(name, 1.0)  # the specification's default
    try:
        ratio = float(arg)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:  # also refuses nan
        raise ConfigError(ARG_VAR, f"expected the share of traces to keep, a number from 0 to 1 "
                                   f"(0.25 keeps a quarter), got {arg[:40]!r}")
    return SamplerChoice(name, ratio)
