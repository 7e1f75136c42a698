# The carrier node daemon: `carrier-node serve`. It dials OUT to the coordinator, so the image
# exposes no port and needs no inbound firewall rule.
#
# Build from the repository root:
#   docker build -f deploy/docker/carrier-node.Dockerfile -t fedoversight-carrier-node:0.1.0 .
#
# Base image: PYTHON_IMAGE, any image with CPython 3.11 and its venv module. Without access to
# Docker Hub, build a Debian 12 one from Debian's packages (deploy/docker/base.sh) and add
#   --build-arg PYTHON_IMAGE=fedoversight-base:bookworm
# The Python dependencies are the pinned, hash-checked set in deploy/requirements.lock
# (refreshed with scripts/lock.sh), so a rebuild of the same commit installs the same versions.
# No `# syntax=` line: BuildKit's built-in Dockerfile frontend is enough, and a syntax line
# would make every build fetch the frontend image from Docker Hub.
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

# --- build: the project wheel, and the locked dependencies' wheels with their hashes checked --
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/build
WORKDIR /src
# Exactly the versions in the lock, as wheels only (the runtime stage has no network and no
# compiler), each checked against the lock's hashes; the lock travels with them.
# Behind a TLS-intercepting proxy, hand pip the proxy's CA bundle as a build secret (it never
# enters a layer):  docker build --secret id=pip-cert,src=/etc/ssl/certs/ca-certificates.crt ...
COPY deploy/requirements.lock ./
RUN --mount=type=secret,id=pip-cert \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi \
 && /opt/build/bin/pip download --require-hashes --no-deps --only-binary=:all: \
        --dest /wheels -r requirements.lock \
 && cp requirements.lock /wheels/
# Only what the distribution needs; README* is optional (a glob that may match nothing).
COPY pyproject.toml README* ./
COPY fedoversight ./fedoversight
COPY coordinator ./coordinator
COPY carrier_node ./carrier_node
COPY oversight_sim ./oversight_sim
RUN --mount=type=secret,id=pip-cert \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi \
 && /opt/build/bin/pip wheel --no-deps --wheel-dir /wheels/project .

# --- runtime: a virtual environment from the local wheels only, run as a non-root user ------
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/fedoversight/bin:$PATH
# The wheels are bind-mounted from the build stage, so they never become a layer of the image.
# A virtual environment, because Debian's own python3 refuses `pip install` into the system.
# The dependencies come from the lock alone (--no-deps: nothing is resolved here), the project
# wheel without its dependencies, and `pip check` confirms the two agree.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python3 -m venv /opt/fedoversight \
 && pip install --no-index --find-links=/wheels --require-hashes --no-deps \
        -r /wheels/requirements.lock \
 && pip install --no-index --no-deps /wheels/project/fedoversight-*.whl \
 && pip check \
 && groupadd --system --gid 10001 carrier-node \
 && useradd --system --uid 10001 --gid carrier-node --no-create-home \
        --home-dir /var/lib/carrier-node --shell /usr/sbin/nologin carrier-node \
 && install -d -o carrier-node -g carrier-node -m 0700 /var/lib/carrier-node \
 && install -d -o root -g carrier-node -m 0750 /etc/fedoversight
# No /data in the image: it is always a mount. An image folder there would hand its owner and
# mode to an empty named volume mounted over it (Docker copies them into the volume), so a data
# volume shared with the writer of the data (compose's `synth`) would end up owned by whichever
# container was created last, and unwritable for the writer.

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
