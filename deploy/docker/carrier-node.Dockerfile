# syntax=docker/dockerfile:1
#
# The carrier node daemon: `carrier-node serve`. It dials OUT to the coordinator, so the image
# exposes no port and needs no inbound firewall rule.
#
# Build from the repository root:
#   docker build -f deploy/docker/carrier-node.Dockerfile -t fedoversight-carrier-node:0.1.0 .
#
# Nothing secret is baked in. At run time mount:
#   /etc/fedoversight/node.toml      the node config (read-only)
#   /etc/fedoversight/policy.toml    the disclosure policy (read-only)
#   /etc/fedoversight/tls/           start-up kit: CA, node certificate and key, operator
#                                    public key (read-only)
#   /data/                           the carrier's tables, NAME.parquet or NAME.csv (read-only)
#   /var/lib/carrier-node/           outbox, nonce log, disclosure secret (writable, persistent;
#                                    also the working directory, where DuckDB spills)
# Validate a data directory before the first start:
#   docker run --rm -v /srv/claims:/data:ro fedoversight-carrier-node:0.1.0 check --data /data

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
 && groupadd --system --gid 10001 carrier-node \
 && useradd --system --uid 10001 --gid carrier-node --no-create-home \
        --home-dir /var/lib/carrier-node --shell /usr/sbin/nologin carrier-node \
 && install -d -o carrier-node -g carrier-node -m 0700 /var/lib/carrier-node \
 && install -d -o root -g carrier-node -m 0750 /etc/fedoversight /data

USER 10001:10001
WORKDIR /var/lib/carrier-node
VOLUME ["/var/lib/carrier-node"]
# No EXPOSE: the node opens no port.

# No HEALTHCHECK: there is no port to probe, and the daemon keeps reconnecting on its own while
# the coordinator is away (an unhealthy mark would say nothing new). A crash ends PID 1, so the
# container's restart policy is the liveness mechanism.
HEALTHCHECK NONE

ENTRYPOINT ["carrier-node"]
CMD ["serve", "--config", "/etc/fedoversight/node.toml", "--json-logs"]
