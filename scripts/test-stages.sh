#!/usr/bin/env bash
# `make test`'s stages (docs/ci.md). Lint first; then three stages side by side,
# since each mostly waits (on sshd, supervisord, agents coming up, MariaDB):
#   pytest        the engine suite, in AGENT_UPDATE_TEST_WORKERS processes (xdist;
#                 default 3; 1 runs it in one process)
#   frappe        the plain bench: build or reuse, fresh site, the app's Frappe tests,
#                 uninstall, upgrade from the old doctypes (scripts/frappe-bench.sh)
#   frappe-press  the bench with Frappe Press (AGENT_UPDATE_PRESS=1)
# Each stage's lines carry its name ("[pytest] …") and it ends with
# `timing: STAGE Ns`; a failed stage does not stop the others, and the run fails
# when any did. AGENT_UPDATE_STAGES=lint,pytest picks some (default: all four).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin=${VENV:-.venv}/bin
workers=${AGENT_UPDATE_TEST_WORKERS:-3}
wanted=${AGENT_UPDATE_STAGES:-lint,pytest,frappe,frappe-press}
[[ $workers =~ ^[1-9][0-9]?$ ]] || {
  echo "AGENT_UPDATE_TEST_WORKERS=$workers: a number of processes, 1 … 99" >&2
  exit 2
}
for name in ${wanted//,/ }; do
  case $name in
    lint | pytest | frappe | frappe-press) ;;
    *)
      echo "AGENT_UPDATE_STAGES=$wanted: $name is not a stage (lint, pytest, frappe, frappe-press)" >&2
      exit 2
      ;;
  esac
done

now() { date +%s; }
# `timed STAGE CMD...`: runs CMD in the foreground, prints `timing: STAGE Ns`, keeps its status.
timed() {
  local name=$1 t rc
  shift
  t=$(now)
  "$@"
  rc=$?
  echo "timing: $name $(($(now) - t))s"
  return "$rc"
}

run_pytest() {
  local -a args=(-q --durations=15)
  [ "$workers" -eq 1 ] || args+=(-n "$workers" --dist loadfile)
  "$bin/python" -m pytest "${args[@]}"
  local rc=$?
  # pytest exits 5 when it collected no test: say so, and fail
  [ "$rc" -ne 5 ] || echo "pytest: no test was collected (exit 5)"
  return "$rc"
}
run_stage() {
  case $1 in
    pytest) run_pytest ;;
    frappe) bash scripts/frappe-tests.sh ;;
    frappe-press) AGENT_UPDATE_PRESS=1 bash scripts/frappe-bench.sh ;;
  esac
}

together=()
for name in ${wanted//,/ }; do
  if [ "$name" = lint ]; then
    timed lint sh -c "'$bin/ruff' check . && '$bin/ruff' format --check ." || exit 1
  else
    together+=("$name")
  fi
done

# Stopped (Ctrl-C, a CI timeout): the stages go too, and each cleans up as it ends.
trap 'trap - INT TERM; kill -TERM 0; exit 130' INT TERM
declare -A pids
for name in "${together[@]}"; do
  (
    t=$(now)
    run_stage "$name" 2>&1 | sed -u "s/^/[$name] /"
    rc=${PIPESTATUS[0]}
    echo "timing: $name $(($(now) - t))s"
    exit "$rc"
  ) &
  pids[$name]=$!
done
failed=()
for name in "${together[@]}"; do
  wait "${pids[$name]}" || failed+=("$name")
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "test stages: failed: ${failed[*]}"
  exit 1
fi
echo "test stages: all passed (${wanted})"
