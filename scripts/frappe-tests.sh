#!/usr/bin/env bash
# Runs the app's Frappe tests in a bench, when one is named:
#   AGENT_UPDATE_BENCH=/path/to/frappe-bench  (the bench directory; unset: the tests are skipped)
#   AGENT_UPDATE_SITE=test.localhost          (the site, default test.localhost)
# The app must be installed on that site (docs/frappe.md). The tests start a
# loopback fleet: the bench's env needs the `supervisor` package and the
# machine OpenSSH's sshd. Uses `bench` when it is on PATH, else the bench's
# own Python (what `bench` runs anyway), so no bench CLI is required.
set -euo pipefail
bench_dir=${AGENT_UPDATE_BENCH:-}
site=${AGENT_UPDATE_SITE:-test.localhost}

skip() {
  echo "frappe tests: SKIPPED ($1)"
  exit 0
}
frappe_cmd() {
  (cd "$bench_dir/sites" && "$bench_dir/env/bin/python" -m frappe.utils.bench_helper frappe --site "$site" "$@")
}

[ -n "$bench_dir" ] || skip "no bench named: set AGENT_UPDATE_BENCH to a bench directory to run them"
bench_dir=$(cd "$bench_dir" 2>/dev/null && pwd) || skip "AGENT_UPDATE_BENCH=${AGENT_UPDATE_BENCH} does not exist"
[ -x "$bench_dir/env/bin/python" ] || skip "$bench_dir has no env/bin/python"
[ -d "$bench_dir/sites/$site" ] || skip "$bench_dir has no site $site"
frappe_cmd execute frappe.ping >/dev/null 2>&1 || skip "site $site in $bench_dir does not answer (database down?)"
if ! frappe_cmd execute frappe.get_installed_apps 2>/dev/null | grep -q '"agent_update"'; then
  echo "frappe tests: agent_update is not installed on $site (see docs/frappe.md)" >&2
  exit 1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
# `run-tests` exits 0 on failures unless CI is set.
if command -v bench >/dev/null 2>&1; then
  (cd "$bench_dir" && CI=1 bench --site "$site" run-tests --app agent_update) 2>&1 | tee "$log"
else
  CI=1 frappe_cmd run-tests --app agent_update 2>&1 | tee "$log"
fi
rc=${PIPESTATUS[0]}
set -e
ran=$(sed -n 's/^Ran \([0-9]*\) tests\{0,1\} in.*/\1/p' "$log" | tail -1)
bad=$(sed -n 's/^FAILED (\(.*\))$/\1/p' "$log" | tail -1 | tr ',' '\n' | awk -F= '{s += $2} END {print s + 0}')
if [ -z "$ran" ] || { [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ]; }; then
  echo "frappe tests: the run failed (exit $rc) before reporting its results"
else
  echo "frappe tests: $((ran - bad)) passed, $bad failed"
fi
exit "$rc"
