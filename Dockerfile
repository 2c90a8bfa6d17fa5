# One image recipe for every Python process of the shop (users, catalog, orders and the gateway).
# Build from the REPOSITORY ROOT (the uv workspace), naming the workspace member, its directory and port:
#   docker build --build-arg PACKAGE=catalog --build-arg SOURCE_DIR=services/catalog \
#       --build-arg PORT=8002 -t shop/catalog .
#   docker build --build-arg PACKAGE=gateway --build-arg SOURCE_DIR=gateway --build-arg PORT=8000 \
#       --build-arg PROXY_HEADERS=false -t shop/gateway .
# docker-compose.yml passes the same arguments. The layers before the first use of PACKAGE are shared
# by all four images; from there on each image has its own cache (a code change rebuilds one image).
# Base images are build args too (a mirror, a patched base, the air-gapped stand-ins of deploy/airgap);
# both stages must use the same PYTHON_IMAGE: the venv's python is a symlink to the base's interpreter.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

# ---- build: resolve the locked dependencies into /app/.venv -----------------------------------------
FROM ${PYTHON_IMAGE} AS build
# `strip`, for the compiled extensions of the wheels (about 27 MB of debug symbols); build stage only.
# Unpinned: the version the base image's Debian release serves.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends binutils \
    && rm -rf /var/lib/apt/lists/*
COPY --from=uv /uv /usr/local/bin/uv
# COMPILE_BYTECODE=0 makes each image about 30 MB smaller, and every start slower (a read-only /app
# can't keep what Python compiles at import).
ARG COMPILE_BYTECODE=1
ENV UV_COMPILE_BYTECODE=${COMPILE_BYTECODE} \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
# Layer 1, third-party packages only: rebuilt when uv.lock changes, not when the code does.
# uv needs every workspace member's pyproject.toml to read the workspace, not their code.
COPY pyproject.toml uv.lock ./
COPY libs/common/pyproject.toml libs/common/
COPY services/users/pyproject.toml services/users/
COPY services/catalog/pyproject.toml services/catalog/
COPY services/orders/pyproject.toml services/orders/
COPY gateway/pyproject.toml gateway/
COPY tools/devstack/pyproject.toml tools/devstack/
# uvicorn[standard] brings watchfiles (only for --reload) and websockets (no route is a WebSocket).
ARG NOT_IN_IMAGES="--no-install-package watchfiles --no-install-package websockets"
ARG PACKAGE
# hadolint ignore=SC2086
RUN --mount=type=cache,target=/root/.cache/uv \
    test -n "$PACKAGE" || { echo "build with --build-arg PACKAGE=users|catalog|orders|gateway" >&2; exit 1; } \
    && uv sync --frozen --no-dev --no-install-workspace --package "$PACKAGE" $NOT_IN_IMAGES \
    && find /app/.venv -name '*.so*' -type f -exec strip --strip-unneeded {} +
# Layer 2, the code: shop_common and this package, installed editable so its directory keeps its
# layout (a service's main.py finds alembic.ini and migrations/ at parents[2], the migrate job runs them).
ARG SOURCE_DIR
COPY libs/common libs/common
COPY ${SOURCE_DIR} ${SOURCE_DIR}
# hadolint ignore=SC2086
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package "$PACKAGE" $NOT_IN_IMAGES

# ---- runtime: the venv and the code, owned by root, run by an unprivileged user --------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 shop \
    && useradd --system --uid 10001 --gid shop --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin shop
WORKDIR /app
COPY --from=build /app /app
ARG PACKAGE
ARG PORT
# "false" for the gateway: it is the edge and decides itself whether to believe X-Forwarded-For
# (TRUST_FORWARDED_FOR); uvicorn must not rewrite the client address before it looks.
ARG PROXY_HEADERS=true
# The service command, in one place: shop_common.server reads its options from these UVICORN_*
# variables (uvicorn's names), so CMD stays exec form (it is PID 1 and gets SIGTERM: it stops
# accepting, finishes in-flight requests, runs the lifespan exit). Any of them can be overridden per
# container (`-e UVICORN_PORT=...`); WEB_CONCURRENCY > 1 makes it a supervisor of that many workers.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/app/.venv/bin:$PATH \
    UVICORN_APP=${PACKAGE}.main:create_app \
    UVICORN_HOST=0.0.0.0 \
    UVICORN_PORT=${PORT} \
    UVICORN_PROXY_HEADERS=${PROXY_HEADERS}
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
EXPOSE ${PORT}
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ['UVICORN_PORT'], timeout=2)"]
STOPSIGNAL SIGTERM
# uvicorn with the httptools protocol bounding the request head (431/408), no uvicorn access log (each
# service writes its own), WEB_CONCURRENCY workers with Prometheus in multiprocess mode.
CMD ["python", "-m", "shop_common.server", "--timeout-graceful-shutdown", "20"]
