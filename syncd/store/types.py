"""Column types and the metadata every table (syncd's and the mirrors') is declared on."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

#: Named constraints so Alembic (and SQLite batch mode) can alter them on every dialect.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = sa.MetaData(naming_convention=NAMING)


def _utc_value(value: datetime | None) -> datetime | None:
    """``UTCDateTime.process_bind_param`` on PostgreSQL: a UTC datetime as it is (the usual case, in a third of
    the time: 0.07 s of CPU a 95,000-event catch-up), any other aware one converted, a naive one refused."""
    if value is None or value.tzinfo is UTC:
        return value
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTCDateTime column")
    return value.astimezone(UTC)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every dialect (SQLite stores naive UTC text)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: sa.Dialect) -> Any:
        """On SQLite, ``process_bind_param`` and the dialect's own DATETIME formatting in one step, remembered.

        Same text as SQLAlchemy's SQLite DATETIME stores (``YYYY-MM-DD HH:MM:SS.ffffff``), so stored values
        and comparisons are unchanged. A catch-up writes an event's time three times (ledger, mirror
        ``created_at`` and ``updated_at``) and a page's rows share their bookkeeping times, so the texts of
        UTC datetimes are kept in one dict for every column and statement. Keyed in UTC only (others are
        converted first): two datetimes of one other zone compare equal across a DST fold, an hour apart.
        """
        if dialect.name != "sqlite":
            return _utc_value  # process_bind_param's answer, without SQLAlchemy's wrapper for each value

        texts = _DATETIME_TEXTS

        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is not UTC:  # the usual case skips this: providers' times are parsed to UTC
                if value.tzinfo is None:
                    raise ValueError("naive datetime given to a UTCDateTime column")
                value = value.astimezone(UTC)
            text = texts.get(value)
            if text is None:
                text = _SQLITE_DATETIME % (value.year, value.month, value.day, value.hour, value.minute,
                                           value.second, value.microsecond)
                if len(texts) >= _DATETIME_TEXTS_MAX:
                    texts.clear()
                texts[value] = text  # dict operations are atomic: safe to share between threads
            return text

        return process

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: SQLAlchemy's SQLite DATETIME storage format, as a tuple format (faster than ``isoformat`` + slicing).
_SQLITE_DATETIME = "%04d-%02d-%02d %02d:%02d:%02d.%06d"
#: UTC datetimes formatted for SQLite (see UTCDateTime.bind_processor), cleared when full.
_DATETIME_TEXTS: dict[datetime, str] = {}
_DATETIME_TEXTS_MAX = 4096


def json_type() -> sa.types.TypeEngine[Any]:
    """JSONB on PostgreSQL, JSON text elsewhere."""
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def ledger_json_type() -> sa.types.TypeEngine[Any]:
    """The ledger's payload: ``json`` on PostgreSQL (migration 0017), JSON text elsewhere.

    Not jsonb: every event is written once (``COPY`` of the text ``quarantine.check`` serialized) and read
    back whole, never queried inside, so jsonb's parse into a tree on input was pure cost: a quarter of a
    second of the server's CPU a 95,000-event catch-up (bench/README.md §D). ``json`` validates the text and
    keeps it as written, so keys read back in the provider's order, as on SQLite. ``json`` has no equality
    operator: no DISTINCT, UNION or GROUP BY may include the payload.
    """
    return sa.JSON().with_variant(postgresql.JSON(), "postgresql")
