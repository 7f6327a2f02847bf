# syntax=docker/dockerfile:1

# The syncd image. One process per container: `syncd run` by default; docker-compose.yml runs the same
# image as `syncd migrate` (one-shot) and as the provider simulators (`syncd simulate …`).
# Outside Compose, run it with `docker run --init` so the simulators (which keep Python's default
# SIGTERM handling) are not PID 1; `syncd run` handles SIGTERM itself.

# One pinned base for both stages: the virtualenv built in the first is only valid on the same Python.
ARG PYTHON_IMAGE=python:3.12.11-slim-bookworm

# ---- build: syncd and its dependencies, installed into a self-contained virtualenv ----------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/syncd
WORKDIR /src
# Only what the wheel is built from (pyproject's readme and packages); tests, bench and docs stay out.
COPY pyproject.toml README.md ./
COPY syncd/ syncd/
COPY connectors/ connectors/
COPY simulators/ simulators/
COPY migrations/ migrations/
# A regular (not editable) install: the package, its Alembic migrations and their package data land in
# site-packages, so the runtime stage needs nothing from /src.
RUN /opt/syncd/bin/pip install --no-cache-dir .

# ---- runtime ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# A fixed uid/gid so volume ownership and Kubernetes' runAsNonRoot work; /app is writable for the
# default SQLite database (sqlite:///syncd.db) when no DATABASE_URL is given.
RUN groupadd --system --gid 10001 syncd \
    && useradd --system --uid 10001 --gid syncd --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin syncd \
    && install --directory --owner=syncd --group=syncd --mode=0750 /app

COPY --from=build /opt/syncd /opt/syncd

ENV PATH="/opt/syncd/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /app
USER 10001:10001

# /healthz and /metrics (SYNCD_HTTP_PORT, default 8080).
EXPOSE 8080

# `syncd check` exits 0 when healthy, 1 when not; the start period covers migrations run at start.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 CMD ["syncd", "check"]

# syncd finishes the page in hand and exits within 10 s; Compose's stop_grace_period allows 15 s.
STOPSIGNAL SIGTERM
CMD ["syncd", "run"]
