#!/usr/bin/env bash
# Runs the app's Frappe tests in a bench, when one is named:
#   AGENT_UPDATE_BENCH=/path/to/frappe-bench  (required: the bench directory)
#   AGENT_UPDATE_SITE=test.localhost          (optional: the site, default test.localhost)
# The bench must already have this app installed on that site (README.md).
# Without AGENT_UPDATE_BENCH the Frappe tests are skipped, and this says so.
set -euo pipefail
bench_dir=${AGENT_UPDATE_BENCH:-}
site=${AGENT_UPDATE_SITE:-test.localhost}
if [ -z "$bench_dir" ]; then
  echo "frappe tests: SKIPPED (no bench: set AGENT_UPDATE_BENCH to a bench directory to run them)"
  exit 0
fi
if [ ! -d "$bench_dir/apps/frappe" ] || [ ! -d "$bench_dir/sites/$site" ]; then
  echo "frappe tests: AGENT_UPDATE_BENCH=$bench_dir has no apps/frappe or no site $site" >&2
  exit 1
fi
bench=${BENCH_CMD:-bench}
command -v "$bench" >/dev/null || bench="$bench_dir/env/bin/bench"
cd "$bench_dir"
# `bench run-tests` exits 0 on failures unless CI is set.
CI=1 "$bench" --site "$site" run-tests --app agent_update
