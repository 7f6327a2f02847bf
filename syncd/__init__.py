"""syncd: poll provider events since a stored cursor into idempotent workflows in your own database."""

from syncd.contracts import Event, Page, Window
from syncd.workflows import Context, Registry, Trigger, workflow

__all__ = ["Context", "Event", "Page", "Registry", "Trigger", "Window", "workflow"]
__version__ = "0.1.0"
