"""The built-in WorkOS mirror against an oracle of its own (issue 27, item 3).

Every other "mirror is exact" check compares with the simulator's ``mirror_state()``, which replays the
stream with the same newer-wins rules syncd has: a mistake in those rules would sit in both. The oracle here
is written from WorkOS's guidance alone (/work/shared/PROVIDERS.md: "compare each object's ``updated_at``
and never overwrite newer data; handlers must tolerate replay"), and it is order-free: for each object,
of all the versions delivered, the one with the greatest ``updated_at`` is what the mirror holds; if that
version is a delete, the object is absent. Delivery order, stale versions and repeats cannot matter to it,
which is exactly what the guidance asks of a mirror.

Hypothesis generates the histories: a few objects of each kind (user, organization, membership), each with
a chain of versions (creates, updates, deletes; every version of an object has its own ``updated_at``);
then a delivery: versions picked in any order (stale and out-of-order), some twice (a repeat is the same
version in a new event), some never; then cut into syncs. A sync may also carry one malformed event (a
``user.updated`` without ``data.id``): the page's batch handler then raises and syncd runs that page's
events one by one, so the per-event mirror (``apply_snapshot``) is held to the same oracle as the batch one
(``apply_snapshots``). Each sync is a real one: the events are appended to the WorkOS simulator, and
``run_once`` (what ``syncd once`` runs) fetches them over loopback HTTP into a real SQLite file or
PostgreSQL database through the built-in mirror workflows.

Speed: one database, one simulator and one App serve all examples; each example uses object ids of its
own (a per-example prefix) and compares only its own objects, so examples cannot see each other.
Bounded (``max_examples``) and derandomized, so the suite is deterministic.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulators.workos import WorkOSSimulator
from syncd.ops.app import App
from syncd.ops.once import run_once
from syncd.workflows import Registry
from tests.conftest import WORKOS_KEY, settings_for

#: kind → (the mirror table syncd documents for it, the one field compared besides id and updated_at)
TABLES = {"user": ("workos_users", "first_name"), "organization": ("workos_organizations", "name"),
          "organization_membership": ("workos_organization_memberships", "status")}
T0 = datetime(2025, 6, 1, tzinfo=UTC)  # versions' updated_at: T0 + version seconds (each distinct)
#: A well-formed envelope whose data a mirror cannot apply: its run fails, and the page's batch with it.
MALFORMED: dict[str, Any] = {"event": "user.updated", "data": {"object": "user", "email": "no-id@example.test"}}


@dataclass(frozen=True)
class Version:
    """One version of one object: its ``updated_at`` (by number) and whether it is the object's delete."""

    kind: str
    object_id: str
    number: int
    deleted: bool

    @property
    def updated_at(self) -> datetime:
        return T0 + timedelta(seconds=self.number)

    def event(self) -> dict[str, Any]:
        """The WorkOS event carrying this version (the shape of PROVIDERS.md's ``data`` per kind)."""
        stamp = self.updated_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        label = f"{self.object_id}@{self.number}"
        data: dict[str, Any] = {"object": self.kind, "id": self.object_id, "created_at": T0.isoformat(),
                                "updated_at": stamp}
        if self.kind == "user":
            data.update(email=f"{self.object_id}@example.test", first_name=label, last_name="Doe")
        elif self.kind == "organization":
            data.update(name=label, domains=[])
        else:
            data.update(user_id="user_x", organization_id="org_x", status=label, role={"slug": "member"})
        verb = "deleted" if self.deleted else ("created" if self.number == 1 else "updated")
        return {"event": f"{self.kind}.{verb}", "data": data}


# ---- the oracle: WorkOS's guidance, nothing of syncd's -------------------------------------------------

def oracle(delivered: list[Version]) -> dict[str, dict[str, tuple[datetime, str]]]:
    """table → {id: (updated_at, compared field)} a mirror following the guidance holds after ``delivered``."""
    newest: dict[tuple[str, str], Version] = {}
    for version in delivered:
        key = (version.kind, version.object_id)
        if key not in newest or version.updated_at > newest[key].updated_at:
            newest[key] = version
    state: dict[str, dict[str, tuple[datetime, str]]] = {table: {} for table, _ in TABLES.values()}
    for (kind, object_id), version in newest.items():
        if not version.deleted:
            state[TABLES[kind][0]][object_id] = (version.updated_at, f"{object_id}@{version.number}")
    return state


# ---- the generated histories ---------------------------------------------------------------------------

_examples = itertools.count()


POISON = "poison"  # in a sync's list: where the malformed event goes
Sync = list[Version | str]


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Sync], list[str]]:
    """(syncs: the versions delivered by each sync, in order, maybe with POISON; the example's object ids)."""
    prefix = f"ex{next(_examples)}"
    versions: list[Version] = []
    ids: list[str] = []
    for kind in TABLES:
        for n in range(draw(st.integers(0, 2))):
            object_id = f"{kind[:3]}_{prefix}_{n}"
            ids.append(object_id)
            # created → updated… ; a delete may come anywhere after the create, even be followed by newer
            # versions (the guidance: the newer data wins, whatever it is)
            kinds = draw(st.lists(st.booleans(), min_size=1, max_size=5))
            versions += [Version(kind, object_id, number + 1, deleted and number > 0)
                         for number, deleted in enumerate(kinds)]
    if not versions:
        return [], ids
    # Any order, repeats (the same version in a second event), gaps (a version never delivered).
    delivery = draw(st.lists(st.sampled_from(versions), min_size=1, max_size=3 * len(versions)))
    cuts = sorted(set(draw(st.lists(st.integers(1, len(delivery)), max_size=3))) | {len(delivery)})
    syncs: list[Sync] = [list(delivery[start:end]) for start, end in itertools.pairwise([0, *cuts])]
    for sync in syncs:
        if draw(st.booleans()):
            sync.insert(draw(st.integers(0, len(sync))), POISON)
    return syncs, ids


# ---- syncd, for real -----------------------------------------------------------------------------------

@pytest.fixture
def mirror_app(db_url: str) -> Iterator[tuple[WorkOSSimulator, App]]:
    with WorkOSSimulator(events=0, seed=27, api_key=WORKOS_KEY) as sim:
        # a failed run goes dead at once: a malformed event's run is not retried by a later example's sync
        app = App.build(settings_for(db_url, WORKOS_API_KEY=WORKOS_KEY, WORKOS_BASE_URL=sim.url,
                                     SYNCD_MAX_ATTEMPTS="1"), registry=Registry())
        try:
            yield sim, app
        finally:
            app.close()


def mirrored(app: App, ids: list[str]) -> dict[str, dict[str, tuple[datetime, str]]]:
    """What syncd's mirror tables hold for ``ids``, read by plain SQL on the tables the README names.
    (Not reflected: reflecting three tables after every sync was half of this test's time on PostgreSQL.)"""
    out: dict[str, dict[str, tuple[datetime, str]]] = {}
    with app.db.connect() as conn:
        for table_name, field in TABLES.values():
            query = sa.text(f"SELECT id, updated_at, {field} FROM {table_name} WHERE id IN :ids").bindparams(
                sa.bindparam("ids", expanding=True))
            rows = conn.execute(query, {"ids": ids}).all()
            out[table_name] = {row[0]: (as_utc(row[1]), row[2]) for row in rows}
    return out


def as_utc(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def test_the_oracle_itself() -> None:
    """The model on a hand-made history: stale update after a newer one, a delete, a newer re-creation."""
    v1, v2, v3 = (Version("user", "u", n, deleted=n == 2) for n in (1, 2, 3))
    assert oracle([v1]) ["workos_users"] == {"u": (v1.updated_at, "u@1")}
    assert oracle([v2, v1])["workos_users"] == {}  # the delete is newer than the late create
    assert oracle([v3, v2, v1, v1])["workos_users"] == {"u": (v3.updated_at, "u@3")}


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(history=histories())
def test_mirror_matches_the_guidance_whatever_the_order_repeats_and_stale_versions(
        mirror_app: tuple[WorkOSSimulator, App], history: tuple[list[Sync], list[str]]) -> None:
    sim, app = mirror_app
    syncs, ids = history
    delivered: list[Version] = []
    for sync in syncs:
        sim.append([item.event() if isinstance(item, Version) else MALFORMED for item in sync])
        report = run_once(app)
        # the malformed event's run fails (exit 1); the rest of its page is mirrored one by one all the same
        assert report.exit_code == (1 if POISON in sync else 0), report.error
        delivered += [item for item in sync if isinstance(item, Version)]
        # after every sync, not only the last: a tombstone or a stored version must hold across syncs
        assert mirrored(app, ids) == oracle(delivered), [(v.object_id, v.number, v.deleted) for v in delivered]
