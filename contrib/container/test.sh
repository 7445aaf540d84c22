#!/usr/bin/env bash
# The container check: builds the project's image from the Dockerfile (its runtime stage
# exactly as users build it, the binary the host built) on a Debian base image made locally,
# and runs it for real. Starts its own Docker engine without touching the host's networking
# (no bridge, no iptables, no ip_forward), and stops it by pid.
#
#   bash contrib/container/test.sh        (as root; cargo build --release first)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
started=$(date +%s)
say() { printf '[container] %s\n' "$*"; }

# Debian's Docker engine (and its own client, which speaks BuildKit without plugins) and
# debootstrap, when missing.
missing=()
[ -x /usr/sbin/dockerd ] || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
# The package starts a system engine where it can; this check runs its own.
if command -v systemctl >/dev/null 2>&1; then
  systemctl stop docker.socket docker 2>/dev/null || true
fi
docker=/usr/bin/docker

# The engine: its own socket and data root (kept between runs, so the base image is made
# once per machine), no bridge, no iptables, no forwarding.
state=${COMMS_ARCHIVER_CONTAINER_STATE:-/var/lib/comms-archiver-container-check}
run=$(mktemp -d)
mkdir -p "$state"
export DOCKER_HOST="unix://$run/docker.sock"
dockerd --data-root "$state/docker" --exec-root "$run/exec" --pidfile "$run/dockerd.pid" \
  -H "$DOCKER_HOST" --bridge=none --iptables=false --ip6tables=false --ip-forward=false \
  --ip-masq=false >"$run/dockerd.log" 2>&1 &
engine=$!
work=$(mktemp -d)
stop_engine() {
  "$docker" rm -f comms-archiver-check >/dev/null 2>&1 || true
  kill "$engine" 2>/dev/null || true
  wait "$engine" 2>/dev/null || true
  rm -rf "$run" "$work"
}
trap stop_engine EXIT
for _ in $(seq 100); do
  "$docker" info >/dev/null 2>&1 && break
  sleep 0.2
done
"$docker" info >/dev/null 2>&1 || { cat "$run/dockerd.log"; say "the engine did not start"; exit 1; }
say "engine $(dockerd --version | cut -d, -f1) started (pid $engine), storage $("$docker" info -f '{{.Driver}}')"

# The base image `debian:bookworm-slim`, made from Debian's packages (the mirror apt uses),
# trimmed of documentation and locales, unless made before.
if ! "$docker" image inspect debian:bookworm-slim >/dev/null 2>&1; then
  mirror=$( (grep -rhE '^[[:space:]]*(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/ \
    2>/dev/null || true) | (grep -oE 'https?://[^ ]+/debian/?( |$)' || true) | head -1 | tr -d ' ')
  mirror=${mirror:-http://deb.debian.org/debian}
  say "making the base image from $mirror"
  rootfs="$state/rootfs"
  rm -rf "$rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$state/debootstrap.log" 2>&1 \
    || { tail -20 "$state/debootstrap.log"; exit 1; }
  rm -rf "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/* \
    "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | "$docker" import - debian:bookworm-slim >/dev/null
  rm -rf "$rootfs"
fi
say "base image: $("$docker" image inspect -f '{{.Size}}' debian:bookworm-slim) bytes"

# The image, from the repository's Dockerfile, with the binary the host built.
[ -x target/release/comms-archiver ] || cargo build --release --locked --bin comms-archiver
DOCKER_BUILDKIT=1 "$docker" build --network host --build-arg BINARY=prebuilt \
  -t comms-archiver:check . >"$work/build.log" 2>&1 || { tail -30 "$work/build.log"; exit 1; }
say "image built: $(( $("$docker" image inspect -f '{{.Size}}' comms-archiver:check) / 1024 / 1024 )) MiB"

# The user: uid and gid 10001.
ids=$("$docker" run --rm --network none --entrypoint id comms-archiver:check)
say "runs as: $ids"
[[ $ids == "uid=10001(comms-archiver) gid=10001(comms-archiver)"* ]] || { say "not uid/gid 10001"; exit 1; }

# `once` on the demo day, read-only root file system, no network: the mail tree is written
# into the volume, owned by that user. (WhatsApp's demo day has nothing held: exit 0.)
mkdir -p "$work/state"
cp -r config fixtures "$work/state/"
chown -R 10001:10001 "$work/state"
set +e
"$docker" run --rm --read-only --network none -v "$work/state:/var/lib/comms-archiver" \
  comms-archiver:check once --config config/demo.toml --date 2026-11-20 --connector whatsapp \
  >"$work/once.out" 2>"$work/once.err"
code=$?
set -e
cat "$work/once.out"
[ "$code" = 0 ] || { tail -20 "$work/once.err"; say "once exited $code"; exit 1; }
owner=$(stat -c '%u:%g' "$work/state/var/mail")
messages=$(find "$work/state/var/mail" -path '*/cur/*' -type f | wc -l)
say "once exited 0; $messages messages in the volume's mail tree, owned by $owner"
[ "$owner" = 10001:10001 ] && [ "$messages" -gt 0 ] || exit 1

# `run` detached turns healthy through the HEALTHCHECK; `docker stop` ends it with exit 0
# well within the grace period.
"$docker" run -d --name comms-archiver-check --read-only --network none \
  --health-interval 1s --health-start-period 30s \
  -v "$work/state:/var/lib/comms-archiver" \
  -e COMMS_ARCHIVER_CONFIG=/var/lib/comms-archiver/config/demo.toml \
  comms-archiver:check >/dev/null
health=starting
for _ in $(seq 60); do
  health=$("$docker" inspect -f '{{.State.Health.Status}}' comms-archiver-check)
  [ "$health" = healthy ] && break
  sleep 1
done
say "run: $health"
[ "$health" = healthy ] || { "$docker" logs comms-archiver-check | tail -20; exit 1; }
before=$(date +%s%N)
"$docker" stop -t 30 comms-archiver-check >/dev/null
took=$(( ($(date +%s%N) - before) / 1000000 ))
exit_code=$("$docker" inspect -f '{{.State.ExitCode}}' comms-archiver-check)
say "docker stop: exit $exit_code after $took ms (grace 30 s)"
[ "$exit_code" = 0 ] && [ "$took" -lt 15000 ] || exit 1

# The trial's compose file is one docker-compose (v1) reads.
docker-compose -f contrib/container/docker-compose.yml config -q
say "contrib/container/docker-compose.yml is valid"

say "container check passed in $(( $(date +%s) - started )) s"
