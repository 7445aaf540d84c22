#!/usr/bin/env bash
# The benchmark harness: one command measures comms-archiver and writes docs/performance.md.
#
#   bash bench/run.sh                    # render bench, Graph (at 50 ms, then at a quarter of
#                                        # its request rate), S in full (with three
#                                        # daemons sharing its day, one killed), L on a) and b)
#   BENCH_SIZES="S L" bash bench/run.sh    # L in full too (c, d and their peers, three daemons)
#   BENCH_SIZES="S L:a" bash bench/run.sh  # S in full, L only on the embedded default
#   BENCH_SEED=7 bash bench/run.sh         # the three daemons' run as BENCH_SEED=7 printed it
#   BENCH_SIZES=XS bash bench/run.sh       # a smoke run of the harness
#   bash bench/run.sh smtp               # only the SMTP intake against OpenSMTPD, replacing
#                                        # that section of docs/performance.md
#
# Installs what it needs where missing (Debian: dovecot-imapd, isync for mbsync, rclone, time,
# mariadb-server for Azurite's metadata; npm: Azurite 3.35.0 into .ci/node), builds the
# release binaries, then runs the criterion render bench (bench/benches/render.rs), the Graph
# benchmark against the fake Graph (tests/integration/graph.rs, bench_graph_throughput) and
# bench/harness.py. Scratch data goes
# to $BENCH_SCRATCH (default /var/tmp/comms-archiver-bench; L needs about 15 GB) and is removed
# unless BENCH_KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes="${BENCH_SIZES:-S L:b}"
scratch="${BENCH_SCRATCH:-/var/tmp/comms-archiver-bench}"

missing=()
command -v dovecot >/dev/null 2>&1 || missing+=(dovecot-imapd)
command -v mbsync >/dev/null 2>&1 || missing+=(isync)
command -v rclone >/dev/null 2>&1 || missing+=(rclone)
[ -x /usr/bin/time ] || missing+=(time)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v mariadbd >/dev/null 2>&1 || missing+=(mariadb-server)
[ -x /usr/sbin/smtpd ] || missing+=(opensmtpd)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
# The packages' own services would share the machine with the measured ones.
if command -v systemctl >/dev/null 2>&1; then
  systemctl stop dovecot mariadb opensmtpd 2>/dev/null || true
fi
if [ ! -x .ci/node/node_modules/.bin/azurite-blob ]; then
  npm install --no-audit --no-fund --prefix .ci/node "azurite@3.35.0"
fi
export AZURITE_BLOB="$PWD/.ci/node/node_modules/.bin/azurite-blob"

cargo build --release --locked --workspace --bins
mkdir -p "$scratch"
if [ "${1:-}" = smtp ]; then
  exec python3 bench/harness.py --smtp-only --scratch "$scratch"
fi
echo "render bench (criterion)"
cargo bench --manifest-path bench/Cargo.toml --bench render -- --noplot >"$scratch/criterion.txt"
# The Graph benchmark: first as the target states it (100 mailboxes at 50 ms, up to 8,000
# requests a second allowed), then the same day at a quarter of that rate, two ways (each
# request four times as slow; a quarter of the mailboxes), which shows what the machine's
# two cores, shared by the daemon and the fake, take from the first.
graph_runs=()
for run in 50:100:400 200:100:400 50:25:100; do
  IFS=: read -r latency mailboxes in_flight <<<"$run"
  echo "Graph at $latency ms per request, $mailboxes mailboxes"
  out="$scratch/graph-$latency-$mailboxes.txt"
  GRAPH_BENCH_LATENCY_MS=$latency GRAPH_BENCH_MAILBOXES=$mailboxes \
    GRAPH_BENCH_ITEMS="${GRAPH_BENCH_ITEMS:-10000}" GRAPH_BENCH_IN_FLIGHT=$in_flight \
    cargo test --release --locked --test integration bench_graph_throughput \
    -- --ignored --nocapture >"$out" 2>&1 || { cat "$out"; exit 1; }
  grep '^graph-bench ' "$out"
  graph_runs+=("$out")
done
python3 bench/harness.py --smtp --sizes "$sizes" --scratch "$scratch" \
  --criterion bench/target/criterion --graph "${graph_runs[@]}" \
  --command "${BENCH_SIZES:+BENCH_SIZES=\"$sizes\" }bash bench/run.sh"
