"""The run-queue scenario's workflow name and call targets, apart from ``bench.fanout_workflow``: importing
that module registers the workflow in the default registry, which the bench (and the test process running
its tests) must not do."""

NAME = "bench.fanout"
TARGETS = ("crm", "chat", "support")
