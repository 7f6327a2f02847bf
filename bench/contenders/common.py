"""What the contenders share: the event types requested (the built-in mirrors'), and the JSON report line."""

from __future__ import annotations

import json
import sys
from typing import Any

#: The types syncd requests when only the built-in WorkOS mirrors are enabled, in syncd's order
#: (sorted), so every contender asks the simulator for exactly the same pages.
MIRROR_TYPES = ",".join(
    sorted(
        f"{kind}.{verb}"
        for kind in ("user", "organization", "organization_membership")
        for verb in ("created", "updated", "deleted")
    )
)
PAGE_SIZE = 100


def report(**values: Any) -> None:
    """The contender's one line of output, read by the harness."""
    sys.stdout.write(json.dumps(values) + "\n")
    sys.stdout.flush()
