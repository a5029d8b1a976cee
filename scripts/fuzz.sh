#!/usr/bin/env bash
# Runs every libFuzzer target in fuzz/ (or the ones named) for SECONDS each (default 300),
# one at a time at low priority. Seeds come from fuzz/corpus/<target>/ (kept in git, read
# only here); what libFuzzer finds goes to fuzz/target/corpus/<target>/ (not in git), and
# crashes to fuzz/artifacts/<target>/. Installs cargo-fuzz and a nightly toolchain if
# missing.
#
#   scripts/fuzz.sh            # every target, 5 minutes each
#   scripts/fuzz.sh 60 dns_request
set -euo pipefail

seconds=${1:-300}
shift || true
cd "$(dirname "$0")/../fuzz"

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

nice -n 19 cargo +nightly fuzz build
failed=()
for target in "${targets[@]}"; do
    mkdir -p "target/corpus/$target" "corpus/$target"
    echo "== $target: ${seconds}s"
    if ! nice -n 19 cargo +nightly fuzz run "$target" "target/corpus/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1; then
        failed+=("$target")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "crashed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
