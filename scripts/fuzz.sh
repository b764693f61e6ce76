#!/usr/bin/env bash
# Fuzz the parsers that read untrusted input, each for a bounded time:
#   ids               ID lists (fetchdocs::fuzzing::parse_ids, as `download` reads them)
#   names             vendor labels → file names (fetchdocs::fuzzing::sanitize)
#   veridox_response  Veridox /files/download answers
#   keelvar_response  Keelvar job objects and completed details
#   listings          listing pages (Keelvar feed, Veridox GET /files) and Link headers
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60 s, all targets)
#
# cargo-fuzz needs nightly compiler flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept
# them. Seeds are in fuzz/seeds/; what the fuzzer learns goes to fuzz/corpus/ (not committed);
# a crash leaves its input in fuzz/artifacts/ and makes this script fail.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}; shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(ids names veridox_response keelvar_response listings)
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  log=$(mktemp)
  if ! cargo fuzz run "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log"; echo "fuzz: $t FAILED (input saved under fuzz/artifacts/$t)"; exit 1
  fi
  runs=$(grep -o 'Done [0-9]* runs' "$log" | awk '{print $2}')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  echo "fuzz: $t: ${runs:-?} executions in ${secs}s, coverage ${cov:-?}, no crash"
  rm -f "$log"
done
