#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each) on the stable toolchain.
#   bash fuzz/run.sh [seconds]
# Needs cargo-fuzz (cargo install cargo-fuzz). New inputs that reach new code are added to
# fuzz/corpus/<target>/ (keep them: minimize with `cargo fuzz cmin -O <target>`); a crash
# leaves its input in fuzz/artifacts/<target>/ and makes this script fail.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
for target in partner_records eml_records mapping_csv config_toml render smtp_command; do
  echo "== $target ($seconds s)"
  # cargo-fuzz uses unstable compiler flags; RUSTC_BOOTSTRAP lets the stable compiler take them.
  RUSTC_BOOTSTRAP=1 cargo fuzz run -O "$target" -- -max_total_time="$seconds" -rss_limit_mb=2048
done
