#!/usr/bin/env bash
# Smoke test of the images and the compose federation: build both images (and the Debian base
# image when it is missing), provision a kit from compose/plan.toml, start compose/ with host
# networking on loopback, run one round with the operator CLI, tear everything down. Prints each
# step; exits non-zero when a step fails or the round is not complete (every carrier answered).
#
#   sudo deploy/smoke.sh
#
# Needs a Docker daemon, Docker Compose v2 (`docker compose`) and, to build the base image,
# root and debootstrap (see deploy/README.md). Nothing but the host's loopback is used: every
# service runs in the host's network namespace, the coordinator listens on 127.0.0.1:50051
# (which must be free) and the nodes reach it as `coordinator` through an /etc/hosts entry.
# The compose files, configs and kit are copied to a temporary folder; the repository is not
# written to. Compose project `fedoversight-smoke`; its containers and volumes are removed at
# the end.
#
# Environment:
#   PYTHON_IMAGE   base image of both builds (default fedoversight-base:bookworm, built by
#                  docker/base.sh when missing; python:3.11-slim where Docker Hub is reachable)
#   PIP_CERT       CA bundle pip should trust while building, e.g. behind a TLS-intercepting
#                  proxy (passed as the build secret `pip-cert`)
#   COMPOSE_DIR    the compose folder to run (default: deploy/compose of this repository)
#   SMOKE_METRIC   metric of the round (default enrollment.member_months)
#   SMOKE_PERIOD   its period (default 2026-01:2026-03)
#   SMOKE_KEEP=1   leave the temporary folder (kit, logs) in place
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
compose_dir=${COMPOSE_DIR:-$repo/deploy/compose}
base=${PYTHON_IMAGE:-fedoversight-base:bookworm}
metric=${SMOKE_METRIC:-enrollment.member_months}
period=${SMOKE_PERIOD:-2026-01:2026-03}
project=fedoversight-smoke
coordinator_image=fedoversight-coordinator:dev   # the tags docker-compose.yml names
node_image=fedoversight-carrier-node:dev
listen=127.0.0.1:50051

# Compose 2.26 colours its log prefixes even with --ansi never.
plain() { sed 's/\x1b\[[0-9;]*[A-Za-z]//g'; }
step() { printf '\n=== %s  %s\n' "$(date -u +%H:%M:%S)" "$*"; }
fail() { printf '\nSMOKE FAILED: %s\n' "$*" >&2; exit 1; }

docker compose version >/dev/null 2>&1 \
    || fail "needs Docker Compose v2 ('docker compose'); see deploy/README.md"
[ -f "$compose_dir/docker-compose.yml" ] || fail "no docker-compose.yml in $compose_dir"

# --- a temporary folder: build logs, the compose files, the kit ----------------------------
work=$(mktemp -d /tmp/fedoversight-smoke.XXXXXX)
compose=(docker compose --ansi never -p "$project" --project-directory "$work"
         -f "$work/docker-compose.yml" -f "$work/docker-compose.host.yml")
cleanup() {
    status=$?
    if [ -f "$work/docker-compose.host.yml" ]; then
        if [ "$status" -ne 0 ]; then
            step "logs (last 40 lines of each service)"
            "${compose[@]}" logs --no-color --tail 40 | plain || true
        fi
        step "tear down"
        "${compose[@]}" down --volumes --remove-orphans || true
    fi
    # Files the containers own (uid 10001) are removed from inside one, as root.
    docker run --rm --network none --user 0 -v "$work:/smoke" --entrypoint rm \
        "$coordinator_image" -rf /smoke/kit >/dev/null 2>&1 || true
    if [ "${SMOKE_KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
    if [ "$status" -eq 0 ]; then step "SMOKE PASSED"; fi
}
trap cleanup EXIT

# --- images ------------------------------------------------------------------------------
if ! docker image inspect "$base" >/dev/null 2>&1; then
    [ "$base" = fedoversight-base:bookworm ] || fail "base image $base is not present"
    step "base image $base is missing: building it from Debian's packages"
    "$repo/deploy/docker/base.sh" "$base"
fi
build_args=(--network host --build-arg "PYTHON_IMAGE=$base")
if [ -n "${PIP_CERT:-}" ]; then
    build_args+=(--secret "id=pip-cert,src=$PIP_CERT")
fi
for pair in "coordinator:$coordinator_image" "carrier-node:$node_image"; do
    image=${pair#*:}
    step "build $image from deploy/docker/${pair%%:*}.Dockerfile on $base"
    log=$work/build-${pair%%:*}.log
    started=$SECONDS
    if ! docker build "${build_args[@]}" -f "$repo/deploy/docker/${pair%%:*}.Dockerfile" \
            -t "$image" "$repo" >"$log" 2>&1; then
        tail -n 60 "$log"
        fail "building $image failed"
    fi
    echo "built in $((SECONDS - started)) s ($(grep -c ' CACHED$' "$log" || true) steps cached):" \
        "$(docker image ls --format '{{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}' "$image")"
    # The installed distributions are exactly the lock's (pip checked their hashes).
    docker run --rm --network none -v "$repo/deploy/requirements.lock:/tmp/requirements.lock:ro" \
        --entrypoint python "$image" -c '
import importlib.metadata as metadata, re, sys
pins = re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", open("/tmp/requirements.lock").read(), re.M)
wrong = [f"{n}: {metadata.version(n)} installed, {v} locked" for n, v in pins
         if metadata.version(n) != v]
print(*wrong, sep="\n") if wrong else print(f"{len(pins)} distributions, each at its locked version")
sys.exit(1 if wrong else 0)' || fail "$image does not hold the locked versions"
    docker run --rm --network none "$image" --help >/dev/null
done

# --- a private copy of the compose folder --------------------------------------------------
[ -f "$compose_dir/plan.toml" ] || fail "no plan.toml in $compose_dir"
cp "$compose_dir/docker-compose.yml" "$compose_dir/plan.toml" "$work/"
cp -r "$compose_dir/config" "$work/"

# --- provision -----------------------------------------------------------------------------
step "provision the kit from plan.toml (oversight provision, in the coordinator image)"
docker run --rm --network none --user "$(id -u):$(id -g)" -v "$work:$work" -w "$work" \
    "$coordinator_image" provision --carriers "$work/plan.toml" --out "$work/kit"
# The daemons run as uid/gid 10001 and the keys are 0600.
docker run --rm --network none --user 0 -v "$work:$work" --entrypoint chown \
    "$coordinator_image" -R 10001:10001 "$work/kit/coordinator" "$work/kit/carriers"
operator_env=$work/kit/operators/operator/operator.env
[ -f "$operator_env" ] || fail "the kit has no $operator_env"
cat "$operator_env"
# The operator CLI runs in the coordinator image, as the user who provisioned, with the
# operator's files mounted at the paths operator.env names.
operator_dir=$(dirname "$operator_env")
operator() {
    docker run --rm --network host --user "$(id -u):$(id -g)" --env-file "$operator_env" \
        -v "$operator_dir:$operator_dir:ro" "$coordinator_image" "$@"
}

# --- host networking on loopback -------------------------------------------------------------
step "compose override: host network, coordinator on $listen, nodes dial it via /etc/hosts"
services=$(docker compose -f "$work/docker-compose.yml" --project-directory "$work" config --services)
{
    echo "# Written by deploy/smoke.sh: every service in the host's network namespace."
    echo "services:"
    for service in $services; do
        case $service in
        coordinator)
            printf '  %s:\n    network_mode: host\n    networks: !reset []\n' "$service"
            printf '    ports: !reset []\n    environment:\n      OVERSIGHT_LISTEN: "%s"\n' "$listen"
            ;;
        node-*)
            printf '  %s:\n    network_mode: host\n    networks: !reset []\n' "$service"
            printf '    extra_hosts: ["coordinator:127.0.0.1"]\n'
            ;;
        esac
    done
    echo "networks: !reset {}"
} > "$work/docker-compose.host.yml"
cat "$work/docker-compose.host.yml"
nodes=$(printf '%s\n' $services | grep -c '^node-')
if (exec 3<>"/dev/tcp/${listen%:*}/${listen#*:}") 2>/dev/null; then
    fail "$listen is already in use"
fi

# --- start, wait for every node, run one round ------------------------------------------------
step "docker compose up (synth, coordinator, $nodes nodes)"
"${compose[@]}" up --detach --no-build
"${compose[@]}" ps --all
if command -v ss >/dev/null; then
    port=${listen#*:}
    echo "listening on port $port:"
    ss -ltnH "sport = :$port"
    if ss -ltnH "sport = :$port" | awk '{print $4}' \
            | grep -v -E '^(127\.0\.0\.1|\[::1\]|\[::ffff:127\.0\.0\.1\]):'; then
        fail "something listens on port $port beyond loopback"
    fi
fi

step "wait for $nodes connected carriers"
connected=0
for _ in $(seq 60); do
    table=$(operator carriers 2>&1) || true
    connected=$(printf '%s\n' "$table" | grep -c ' yes ' || true)
    [ "$connected" -ge "$nodes" ] && break
    sleep 2
done
printf '%s\n' "$table"
[ "$connected" -ge "$nodes" ] || fail "only $connected of $nodes carriers connected"

step "oversight round run --metric $metric --period $period"
set +e
operator round run --metric "$metric" --period "$period" --deadline 60
rc=$?
set -e
echo "round run exit status: $rc (0: every carrier answered)"
[ "$rc" -eq 0 ] || fail "the round did not complete (exit status $rc)"

step "what the services logged"
"${compose[@]}" logs --no-color coordinator | plain | tail -n 15
for service in $services; do
    case $service in node-*) "${compose[@]}" logs --no-color "$service" | plain | tail -n 3 ;; esac
done
