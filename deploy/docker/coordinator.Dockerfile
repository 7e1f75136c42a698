# The coordinator (agency side): `oversight serve`.
#
# Build from the repository root:
#   docker build -f deploy/docker/coordinator.Dockerfile -t fedoversight-coordinator:0.1.0 .
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
#   /etc/fedoversight/coordinator.toml   the config (read-only)
#   /etc/fedoversight/tls/               CA, certificate, key, operator signing key (read-only)
#   /var/lib/oversight/                  the SQLite round store (writable, persistent)
# The same image also carries the operator commands (`oversight round run ...`) and
# `oversight synth` (synthetic carrier data for demos).

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
 && groupadd --system --gid 10001 oversight \
 && useradd --system --uid 10001 --gid oversight --no-create-home \
        --home-dir /var/lib/oversight --shell /usr/sbin/nologin oversight \
 && install -d -o oversight -g oversight -m 0750 /var/lib/oversight /data \
 && install -d -o root -g oversight -m 0750 /etc/fedoversight

USER 10001:10001
WORKDIR /var/lib/oversight
VOLUME ["/var/lib/oversight"]
EXPOSE 50051

# With mutual TLS on, the gRPC health service on this port answers only a client that shows a
# certificate from the federation's CA, which a probe has not: probe the listening socket.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import socket; socket.create_connection(('127.0.0.1', 50051), timeout=3).close()"]

ENTRYPOINT ["oversight"]
CMD ["serve", "--config", "/etc/fedoversight/coordinator.toml", "--json-logs"]
