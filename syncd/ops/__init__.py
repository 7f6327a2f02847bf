"""Operating syncd: app wiring, scheduler, backfill, replay, health, metrics, status, demo."""
