# syntax=docker/dockerfile:1
#
# The coordinator (agency side): `oversight serve`.
#
# Build from the repository root:
#   docker build -f deploy/docker/coordinator.Dockerfile -t fedoversight-coordinator:0.1.0 .
#
# Nothing secret is baked in. At run time mount:
#   /etc/fedoversight/coordinator.toml   the config (read-only)
#   /etc/fedoversight/tls/               CA, certificate, key, operator signing key (read-only)
#   /var/lib/oversight/                  the SQLite round store (writable, persistent)
# The same image also carries the operator commands (`oversight round run ...`) and
# `oversight synth` (synthetic carrier data for demos).

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: one wheel for the project plus wheels of every dependency ----------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# Only what the distribution needs; README* is optional (a glob that may match nothing).
COPY pyproject.toml README* ./
COPY fedoversight ./fedoversight
COPY coordinator ./coordinator
COPY carrier_node ./carrier_node
COPY oversight_sim ./oversight_sim
RUN python -m pip wheel --wheel-dir /wheels .

# --- runtime: install from the local wheels only, run as a non-root user -------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# The wheels are bind-mounted from the build stage, so they never become a layer of the image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-index --find-links=/wheels fedoversight \
 && groupadd --system --gid 10001 oversight \
 && useradd --system --uid 10001 --gid oversight --no-create-home \
        --home-dir /var/lib/oversight --shell /usr/sbin/nologin oversight \
 && install -d -o oversight -g oversight -m 0750 /var/lib/oversight /data \
 && install -d -o root -g oversight -m 0750 /etc/fedoversight

USER 10001:10001
WORKDIR /var/lib/oversight
VOLUME ["/var/lib/oversight"]
EXPOSE 50051

# No gRPC health service exists, so probe the listening socket (listen = "0.0.0.0:50051").
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import socket; socket.create_connection(('127.0.0.1', 50051), timeout=3).close()"]

ENTRYPOINT ["oversight"]
CMD ["serve", "--config", "/etc/fedoversight/coordinator.toml", "--json-logs"]
