#!/usr/bin/env bash
# Runs the app's Frappe tests in a bench:
#   AGENT_UPDATE_BENCH=/path/to/frappe-bench  a bench of yours, with the app installed
#                                             on the site (docs/frappe.md)
#   AGENT_UPDATE_SITE=test.localhost          its site (default test.localhost)
#   AGENT_UPDATE_EXPECT_PRESS=1|0             the tests check the site has (or has not)
#                                             Frappe Press (unset: whatever it has)
# Without AGENT_UPDATE_BENCH, scripts/frappe-bench.sh builds (or reuses) a cached
# bench from a framework source (FRAPPE_SRC, default ../shared/peers/frappe-v15.tar.gz),
# makes a fresh site with this checkout installed, and comes back here; with no
# source either, one SKIPPED line and exit 0. The tests start a loopback fleet:
# the bench's env needs the `supervisor` package and the machine OpenSSH's sshd.
# Uses `bench` when it is on PATH, else the bench's own Python (what `bench` runs
# anyway). With CI set, a skipped test fails the run too.
set -euo pipefail
bench_dir=${AGENT_UPDATE_BENCH:-}
site=${AGENT_UPDATE_SITE:-test.localhost}
label=${AGENT_UPDATE_BENCH_LABEL:-} # "press": lines say which bench they are about
name="frappe tests${label:+ ($label)}"

skip() {
  echo "$name: SKIPPED ($1)"
  exit 0
}
frappe_cmd() {
  (cd "$bench_dir/sites" && "$bench_dir/env/bin/python" -m frappe.utils.bench_helper frappe --site "$site" "$@")
}

[ -n "$bench_dir" ] || exec bash "$(dirname "$0")/frappe-bench.sh"
bench_dir=$(cd "$bench_dir" 2>/dev/null && pwd) || skip "AGENT_UPDATE_BENCH=${AGENT_UPDATE_BENCH} does not exist"
[ -x "$bench_dir/env/bin/python" ] || skip "$bench_dir has no env/bin/python"
[ -d "$bench_dir/sites/$site" ] || skip "$bench_dir has no site $site"
frappe_cmd execute frappe.ping >/dev/null 2>&1 || skip "site $site in $bench_dir does not answer (database down?)"
if ! frappe_cmd execute frappe.get_installed_apps 2>/dev/null | grep -q '"agent_update"'; then
  echo "$name: agent_update is not installed on $site (see docs/frappe.md)" >&2
  exit 1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
started=$(date +%s)
set +e
# `run-tests` exits 0 on failures unless CI is set.
if command -v bench >/dev/null 2>&1; then
  (cd "$bench_dir" && CI=1 bench --site "$site" run-tests --app agent_update) 2>&1 | tee "$log"
else
  CI=1 frappe_cmd run-tests --app agent_update 2>&1 | tee "$log"
fi
rc=${PIPESTATUS[0]}
set -e
echo "timing: ${label:+$label-}frappe-tests $(($(date +%s) - started))s"
# unittest's summary: "Ran N tests in Xs", then "OK (skipped=K)" or "FAILED (failures=F, errors=E, …)"
ran=$(sed -n 's/^Ran \([0-9]*\) tests\{0,1\} in.*/\1/p' "$log" | tail -1)
summary=$(grep -E '^(OK|FAILED)( \(.*\))?$' "$log" | tail -1 || true)
count() {
  local n
  n=$(sed -n "s/.*[(, ]$1=\([0-9]*\).*/\1/p" <<<"$summary" | head -1)
  echo "${n:-0}"
}
bad=$(($(count failures) + $(count errors) + $(count unexpected_successes)))
skipped=$(($(count skipped) + $(count expected_failures)))
if [ -z "$ran" ] || [ -z "$summary" ]; then
  echo "$name: the run failed (exit $rc) before reporting its results"
  [ "$rc" -ne 0 ] || rc=1
  exit "$rc"
fi
echo "$name: $((ran - bad - skipped)) passed, $bad failed"
if [ "$skipped" -gt 0 ]; then
  echo "$name: $skipped skipped"
  if [ -n "${CI:-}" ]; then
    echo "$name: CI runs every test: a skipped one fails the run (see its reason above)"
    [ "$rc" -ne 0 ] || rc=1
  fi
fi
if [ "$ran" -eq 0 ]; then
  echo "$name: no test ran"
  [ "$rc" -ne 0 ] || rc=1
fi
[ "$bad" -eq 0 ] || [ "$rc" -ne 0 ] || rc=1
exit "$rc"
