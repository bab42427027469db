# syntax=docker/dockerfile:1
# erx-connector image: the web service, the workers, the migrate Job and the reconcile
# CronJob (k8s/) all run it with their own command. Two stages: the builder turns the
# pinned requirements into wheels (with a compiler, for any pin without a binary
# wheel); the runtime stage installs those wheels only, carries no compiler and runs
# as a numeric non-root user whose id matches the pods' securityContext (10001).
#   docker build -t erx-connector:0.1.0 .
# CI does not build it (no container engine there); `bash .ci/manifests` lints it with
# checkov. The release pipeline pins the base image by digest
# (python:3.11-slim-bookworm@sha256:...) when it builds.
FROM python:3.11-slim-bookworm AS builder
# No apt version pins: this stage is thrown away, and security fixes should flow in.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential libpq-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /build
COPY requirements.txt .
RUN pip wheel --no-cache-dir --disable-pip-version-check --wheel-dir /wheels -r requirements.txt

FROM python:3.11-slim-bookworm AS runtime
# Kubernetes probes /healthz and /readyz (k8s/base/web-deployment.yaml); a Docker
# HEALTHCHECK would be ignored there, and the worker image has no HTTP to check.
# checkov:skip=CKV_DOCKER_2:Health is checked by the Kubernetes probes, which ignore HEALTHCHECK
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 erx \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin erx
WORKDIR /srv
# DejaVu Sans: the Region A PDF embeds it for names outside Latin-1 (PDF_FONT_PATH).
RUN apt-get update && apt-get install -y --no-install-recommends fonts-dejavu-core && rm -rf /var/lib/apt/lists/*
COPY requirements.txt .
# The wheels come in through a bind mount, so they never become a layer of this image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels -r requirements.txt
# Code owned by root and not writable by the runtime user (the pods also mount the
# root filesystem read-only).
COPY app app
COPY connector connector
COPY webhooks webhooks
COPY migrations migrations
COPY scripts scripts
# The event contract: the schemas and the module app.mechanisms.event_contract re-exports.
COPY contracts contracts
COPY alembic.ini gunicorn.conf.py wsgi.py ./
# Bytecode compiled now, as root: at run time the filesystem is read-only.
RUN python -m compileall -q app connector webhooks migrations scripts contracts gunicorn.conf.py wsgi.py
USER 10001:10001
# 8000: the web tier (gunicorn; its /metrics in multiprocess mode: gunicorn.conf.py sets
# PROMETHEUS_MULTIPROC_DIR to a fresh directory when several workers run, k8s mounts an
# emptyDir there). 9100: a worker's /metrics (`flask --app app worker --metrics-port 9100`,
# as k8s/base/worker-deployment.yaml runs it). Not set here: PROMETHEUS_MULTIPROC_DIR in
# the image would switch the single-process commands (worker, migrate, reconcile) to a
# directory they do not have.
EXPOSE 8000 9100
CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
