# syntax=docker/dockerfile:1
# One image for the API (default command) and the workers (`backprop worker`); see docker-compose.yml.

ARG PYTHON_VERSION=3.11

# --- builder: wheels for the project and its pinned dependencies ---------------------------------------
FROM python:${PYTHON_VERSION}-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Compilers, only here: for any dependency without a wheel on this platform.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY constraints.txt pyproject.toml README.md ./
COPY engine ./engine
COPY worker ./worker
COPY service ./service
COPY backprop ./backprop
RUN pip wheel --wheel-dir /wheels --constraint constraints.txt .

# --- final: the wheels installed on a clean base, run as an unprivileged user ------------------------------
FROM python:${PYTHON_VERSION}-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BACKPROP_DATA_DIR=/data

RUN groupadd --system --gid 10001 backprop \
    && useradd --system --uid 10001 --gid backprop --create-home --home-dir /home/backprop backprop \
    && mkdir -p /data \
    && chown backprop:backprop /data
# (/data: a new named volume mounted there starts with this owner, so the non-root user can write it.)

# Install from the builder's wheels only (no index, no compilers); the wheels do not stay in a layer.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels backprop

USER backprop
WORKDIR /home/backprop
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('BACKPROP_PORT', '8000') + '/healthz', timeout=4)"]

# On 0.0.0.0 the API needs BACKPROP_API_KEYS (or, on purpose, BACKPROP_ALLOW_NO_AUTH=true): it exits otherwise.
CMD ["backprop", "api", "--host", "0.0.0.0"]
