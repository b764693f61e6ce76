#!/usr/bin/env bash
# How old were Keelvar URLs when their downloads began, and how many expired?
#
# Runs the real binary against `fetchdocs sandbox` on 127.0.0.1. The sandbox measures each URL's
# age (from its job's completion to the moment the download request arrived) and counts 403s
# for expired URLs, so the numbers do not depend on the client's own bookkeeping.
#
#   scripts/keelvar-url-age.sh [FILES] [URL_LIFETIME_S] [BODY_BYTES_PER_S] [CONCURRENCY]
#
# Defaults: 200 files, 60 s lifetime (Keelvar's documented one), bodies at 1 MB/s each, -j 8,
# the sandbox enforcing Keelvar's documented 30 requests/minute.
# Needs: cargo, curl, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
files=${1:-200}; lifetime=${2:-60}; bps=${3:-1000000}; j=${4:-8}

cargo build --release --quiet
bin=target/release/fetchdocs
work=$(mktemp -d)
trap 'kill $sandbox_pid 2>/dev/null || true; rm -rf "$work"' EXIT

"$bin" sandbox --files "$files" --ids-out "$work/ids.txt" \
  --keelvar-url-lifetime "$lifetime" --slow-body "$bps" --keelvar-rate-limit 30 \
  > "$work/sandbox.log" &
sandbox_pid=$!
for _ in $(seq 100); do grep -q '^API' "$work/sandbox.log" 2>/dev/null && break; sleep 0.1; done
api=$(awk '/^API/ {print $NF}' "$work/sandbox.log")
key=$(awk '/^Keelvar API key/ {print $NF}' "$work/sandbox.log")

start=$(date +%s.%N)
set +e
FETCHDOCS_API_KEY="$key" "$bin" download --provider keelvar --base-url "$api" \
  --ids "$work/ids.txt" -o "$work/out" -j "$j" -q --report "$work/report.json"
status=$?
set -e
end=$(date +%s.%N)

curl -s "$api/_sandbox/stats" > "$work/stats.json"
python3 - "$work/stats.json" "$work/report.json" "$files" "$lifetime" "$bps" "$j" "$status" "$start" "$end" <<'PY'
import json, statistics, sys
stats = json.load(open(sys.argv[1])); report = json.load(open(sys.argv[2]))
files, lifetime, bps, j, status = sys.argv[3:8]
took = float(sys.argv[9]) - float(sys.argv[8])
ages = sorted(a / 1000 for a in stats["url_ages_ms"])
s = report["summary"]
print(f"scenario: {files} files, URLs live {lifetime}s after their job completes, "
      f"bodies at {int(bps)/1e6:g} MB/s, -j {j}, sandbox limit 30 requests/min")
print(f"result:   exit {status}; {s['downloaded']} downloaded, {s['failed']} failed, in {took:.1f}s")
print(f"jobs:     {stats['jobs_submitted']} submitted ({stats['max_batch']} files at most), "
      f"{stats['job_polls']} polls, {stats['api_requests']} API requests, {stats['api_throttled']} answered 429")
if ages:
    print(f"URL age when its download began: min {ages[0]:.2f}s, median {statistics.median(ages):.2f}s, "
          f"max {ages[-1]:.2f}s (n={len(ages)})")
print(f"expired:  {stats['expired_hits']} download request(s) met an expired URL (HTTP 403)")
print(f"-j:       at most {stats['file_max_in_flight']} downloads in flight")
PY
