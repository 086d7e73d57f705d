#!/usr/bin/env bash
# Builds a Frappe bench from a framework source (once: it is cached outside the
# checkout), gives it a fresh site with THIS checkout installed, then runs the
# app's Frappe tests there (scripts/frappe-tests.sh). What Frappe apps' own CI
# does (bench init, new-site, run-tests), without the network for the framework.
#
#   FRAPPE_SRC            framework source: a .tar.gz, a directory or a git URL
#                         (default ../shared/peers/frappe-v15.tar.gz; none: SKIPPED)
#   FRAPPE_BRANCH         branch of a git source (default version-15)
#   FRAPPE_BENCH_VERSION  the bench tool from PyPI (default 5.31.1)
#   AGENT_UPDATE_CACHE    where benches are kept (default ~/.cache/agent_update)
#   AGENT_UPDATE_SITE     the site (default test.localhost)
#   AGENT_UPDATE_DB_ROOT_PASSWORD  MariaDB root password (default empty: root by socket)
#   AGENT_UPDATE_PRESS    1: the second bench, with Frappe Press installed from
#                         PRESS_SRC (default ../shared/peers/press-010bc70.tar.gz;
#                         missing: SKIPPED); the site gets Press, then this app
#   AGENT_UPDATE_DESK_BENCH  1: the desk benchmark (benchmarks/desk.py, `make bench`)
#                         instead of the tests, on the plain bench and a site of its
#                         own (default bench.localhost, dropped afterwards);
#                         AGENT_UPDATE_DESK_BENCH_ARGS: its options (e.g. "--rows 500")
#
# docs/ci.md says what is cached, how the key is made and what each stage costs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${AGENT_UPDATE_CACHE:-$HOME/.cache/agent_update}
branch=${FRAPPE_BRANCH:-version-15}
bench_version=${FRAPPE_BENCH_VERSION:-5.31.1}
desk=${AGENT_UPDATE_DESK_BENCH:-}
[ "$desk" != 0 ] || desk=''
if [ -n "$desk" ]; then site=${AGENT_UPDATE_SITE:-bench.localhost}; else site=${AGENT_UPDATE_SITE:-test.localhost}; fi
db_root_password=${AGENT_UPDATE_DB_ROOT_PASSWORD:-}
python=${PYTHON:-python3}
recipe=1 # bump when the build below changes: every cached bench is then rebuilt
press=${AGENT_UPDATE_PRESS:-}
press_recipe=1 # bump when the Press part of the build changes
# What Press's modules import, held to the framework's own pins (docs/ci.md).
press_constraints=('Click~=8.1.7' 'pydantic~=2.7.0' 'python-dateutil~=2.8.2' 'pytz==2023.3' 'Werkzeug~=3.0.1')
press_requirements=('wrapt~=1.15.0' 'oci==2.180.0' 'twilio==8.10.3' 'dnspython==1.16.0' 'pydo==0.24.0'
  'ansible-base==2.10.17' 'hcloud==2.2.1' 'python-telegram-bot==13.15' 'razorpay>=1.3.0' 'stripe~=2.56.0'
  'elasticsearch-dsl>=8,<9' 'dockerfile==3.2.0' 'playwright==1.49.1' 'PyGithub==1.44.1' 'docker==6.1.2'
  'prometheus-client==0.19.0' 'selenium==4.23.1' 'prometheus-api-client==0.6.0' 'jsonschema>=4.24,<5')
press_nodeps=('frappe-mcp==0.1.0') # its own pins break the framework; only press.mcp imports it

skip() {
  if [ -n "$desk" ]; then echo "desk bench: SKIPPED ($1)"; else echo "frappe tests${press:+ (press)}: SKIPPED ($1)"; fi
  exit 0
}
die() {
  echo "frappe bench: $1" >&2
  exit 1
}
now() { date +%s; }
# `logged LOG CMD...`: runs CMD into LOG; on failure shows LOG's tail and fails.
logged() {
  local log=$1 start
  shift
  start=$(now)
  echo "== $*" >>"$log"
  if ! "$@" >>"$log" 2>&1; then
    echo "frappe bench: failed: $*" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
  echo "== $(($(now) - start))s" >>"$log"
}

# ---- the source ------------------------------------------------------------
if [ -n "${FRAPPE_SRC+set}" ]; then
  src=$FRAPPE_SRC
  [ -n "$src" ] || skip "FRAPPE_SRC is empty"
else
  src=$root/../shared/peers/frappe-v15.tar.gz
  [ -e "$src" ] || skip "no framework source: set FRAPPE_SRC to a tarball, a directory or a git URL, or AGENT_UPDATE_BENCH to a bench"
fi
case $src in
  *://* | git@*:*) kind=url ;;
  *)
    [ -e "$src" ] || die "FRAPPE_SRC=$src does not exist"
    src=$(cd "$(dirname "$src")" && pwd)/$(basename "$src")
    if [ -d "$src" ]; then kind=dir; else kind=tar; fi
    ;;
esac
[[ $branch =~ ^[A-Za-z0-9._/-]+$ ]] || die "FRAPPE_BRANCH=$branch is not a branch name"
[[ $bench_version =~ ^[0-9][0-9a-z.]*$ ]] || die "FRAPPE_BENCH_VERSION=$bench_version is not a version"
[[ $site =~ ^[a-z0-9][a-z0-9.-]*$ ]] || die "AGENT_UPDATE_SITE=$site is not a site name"
command -v "$python" >/dev/null || die "no $python"
case $press in
  '' | 0) press='' ;;
  1)
    if [ -n "${PRESS_SRC:-}" ]; then
      press_src=$PRESS_SRC
      [ -f "$press_src" ] || die "PRESS_SRC=$press_src does not exist"
    else
      press_src=$root/../shared/peers/press-010bc70.tar.gz
      [ -f "$press_src" ] || skip "no Press source: set PRESS_SRC to Press's .tar.gz (top folder press/)"
    fi
    press_src=$(cd "$(dirname "$press_src")" && pwd)/$(basename "$press_src")
    ;;
  *) die "AGENT_UPDATE_PRESS=$press: 1 or empty" ;;
esac
case $desk in
  '') ;;
  1) [ -z "$press" ] || die "AGENT_UPDATE_DESK_BENCH runs on the plain bench: unset AGENT_UPDATE_PRESS" ;;
  *) die "AGENT_UPDATE_DESK_BENCH=$desk: 1 or empty" ;;
esac

source_id() {
  case $kind in
    tar) sha256sum "$src" | cut -d' ' -f1 ;;
    url) git ls-remote "$src" "refs/heads/$branch" | cut -f1 | grep . || die "FRAPPE_SRC=$src has no branch $branch" ;;
    dir)
      if git -C "$src" rev-parse --show-toplevel 2>/dev/null | grep -qx "$src"; then
        { git -C "$src" rev-parse HEAD && git -C "$src" status --porcelain; } | sha256sum | cut -d' ' -f1
      else
        tar -C "$src" --sort=name --mtime=@0 --owner=0 --group=0 -cf - . | sha256sum | cut -d' ' -f1
      fi
      ;;
  esac
}
# What the app needs in the bench env: its dependencies and its tests' `supervisor`.
app_requirements() {
  "$python" - "$root/pyproject.toml" <<'EOF'
import re, sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
test = [r for r in project.get("optional-dependencies", {}).get("test", []) if re.match(r"supervisor\b", r)]
print("\n".join(project.get("dependencies", []) + test))
EOF
}
requirements=$(app_requirements) || die "cannot read the dependencies in pyproject.toml"
sid=$(source_id)
press_id=
[ -z "$press" ] || press_id="press $press_recipe $(sha256sum "$press_src" | cut -d' ' -f1) ${press_constraints[*]} ${press_requirements[*]} ${press_nodeps[*]}"
key=$(printf '%s\n' "recipe $recipe" "source $sid" "branch $branch" "bench $bench_version" \
  "python $("$python" -c 'import sys; print(sys.version.split()[0])')" "$requirements" $press_id |
  sha256sum | cut -c1-12)

mkdir -p "$cache"
# The Press bench is a second bench with its own key, lock, logs and timing lines.
kind_prefix=${press:+press-}
bench_dir=$cache/${kind_prefix}bench-$key
tool=$cache/bench-cli-$bench_version
done_marker=$bench_dir/.agent-update-built
export PATH="$tool/bin:$PATH"

# One run at a time per cache: the build, the site and the tests share the bench.
lock=$cache/${kind_prefix}bench.lock
exec 9>"$lock"
if ! flock -n 9; then
  echo "frappe bench: another run holds $lock; waiting (at most 60 min)"
  t=$(now)
  flock -w 3600 9 || die "$lock still held after 60 min"
  echo "timing: ${kind_prefix}lock-wait $(($(now) - t))s"
fi

# ---- the machine: yarn, MariaDB charset, the bench tool --------------------
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
# `mysql_root mariadb|mariadb-dump ARGS...`: a MariaDB client as the database's root.
mysql_root() {
  local client alt=mysql
  [ "$1" = mariadb ] || alt=mysqldump
  client=$(command -v "$1" || command -v "$alt") || die "no MariaDB client ($1 or $alt)"
  shift
  if [ -n "$db_root_password" ]; then
    MYSQL_PWD=$db_root_password "$client" -uroot -h127.0.0.1 "$@"
  else
    as_root "$client" -uroot "$@"
  fi
}
prepare_machine() {
  command -v node >/dev/null || die "no node (Frappe v15 needs node 18 or newer)"
  # Both benches may build at once (make test runs them side by side): the tool and
  # yarn are shared, so one build at a time sets them up.
  exec 8>"$cache/tool.lock"
  flock -w 900 8 || die "$cache/tool.lock still held after 15 min"
  command -v yarn >/dev/null || logged "$1" as_root npm install -g yarn
  if [ ! -x "$tool/bin/bench" ]; then
    rm -rf "$tool"
    logged "$1" "$python" -m venv "$tool"
    logged "$1" "$tool/bin/pip" install "frappe-bench==$bench_version"
  fi
  exec 8>&-
}
mysql_root mariadb -e "SET GLOBAL character_set_server='utf8mb4'; SET GLOBAL collation_server='utf8mb4_unicode_ci'" ||
  die "cannot reach MariaDB as root (set AGENT_UPDATE_DB_ROOT_PASSWORD if it has a password)"

# ---- the bench (cached) -----------------------------------------------------
# A git repository of the source, on $branch, for `bench init --frappe-path`.
source_repo() {
  local work=$1 top
  if [ "$kind" = url ] || { [ "$kind" = dir ] && [ -e "$src/.git" ]; }; then
    echo "$src"
    return
  fi
  mkdir -p "$work"
  if [ "$kind" = tar ]; then
    tar -xzf "$src" -C "$work"
  else
    cp -a "$src/." "$work/frappe"
  fi
  top=$(dirname "$(find "$work" -maxdepth 2 -name pyproject.toml -print -quit)")
  [ -f "$top/frappe/__init__.py" ] || die "FRAPPE_SRC=$src holds no frappe/ package"
  # no remote named origin: bench would name the app after it
  git -C "$top" init -q -b "$branch"
  git -C "$top" add -A
  git -C "$top" -c user.name=agent_update -c user.email=ci@localhost commit -qm "$branch" --no-verify
  echo "$top"
}
build_bench() {
  local log=$cache/${kind_prefix}build-$key.log work=$cache/src-$key runner=$cache/runner path
  : >"$log"
  echo "frappe bench: building $bench_dir (log: $log)"
  prepare_machine "$log"
  rm -rf "$bench_dir" "$work"
  # As root, bench runs only where sites/common_site_config.json names a frappe_user.
  mkdir -p "$runner/sites"
  echo '{"frappe_user": "root"}' >"$runner/sites/common_site_config.json"
  path=$(source_repo "$work")
  # A yarn cache per bench: two `yarn install`s in one cache (both benches built at
  # once) corrupt each other's unpacked packages.
  export YARN_CACHE_FOLDER=$cache/${kind_prefix}yarn-cache
  (cd "$runner" && logged "$log" bench init "$bench_dir" --frappe-path "$path" --frappe-branch "$branch" \
    --python "$("$python" -c 'import sys; print(sys.executable)')" --skip-assets --skip-redis-config-generation --no-backups)
  rm -rf "$work"
  # setuptools 76+ has no pkg_resources, which new-site imports
  local -a reqs
  mapfile -t reqs <<<"$requirements"
  logged "$log" "$bench_dir/env/bin/python" -m pip install 'setuptools<76' "${reqs[@]}"
  # The machine's Redis; as root, bench runs only with a frappe_user named.
  "$python" - "$bench_dir/sites/common_site_config.json" "$(id -u)" <<'EOF'
import json, sys
path, uid = sys.argv[1], int(sys.argv[2])
config = json.load(open(path))
config.update({k: "redis://127.0.0.1:6379" for k in ("redis_cache", "redis_queue", "redis_socketio")})
if uid == 0:
    config["frappe_user"] = "root"
json.dump(config, open(path, "w"), indent=1)
EOF
  [ -z "$press" ] || add_press "$log"
  touch "$done_marker"
}
# Press as an app of the bench: its source as a git repository in apps/press,
# installed without its dependencies, then only what its modules import.
add_press() {
  local log=$1 app=$bench_dir/apps/press pip=("$bench_dir/env/bin/python" -m pip)
  tar -xzf "$press_src" -C "$bench_dir/apps"
  [ -f "$app/press/hooks.py" ] || die "PRESS_SRC=$press_src holds no press/press/hooks.py"
  git -C "$app" init -q -b develop
  git -C "$app" add -A
  git -C "$app" -c user.name=agent_update -c user.email=ci@localhost commit -qm press --no-verify
  printf '%s\n' "${press_constraints[@]}" >"$bench_dir/press-constraints.txt"
  logged "$log" "${pip[@]}" install --no-deps -e "$app"
  logged "$log" "${pip[@]}" install -c "$bench_dir/press-constraints.txt" "${press_requirements[@]}"
  logged "$log" "${pip[@]}" install --no-deps "${press_nodeps[@]}"
  local apps=$bench_dir/sites/apps.txt
  [ -z "$(tail -c1 "$apps")" ] || echo >>"$apps"
  echo press >>"$apps"
}
t=$(now)
if [ -f "$done_marker" ]; then
  built=cached
else
  built=cold
  build_bench
fi
echo "timing: ${kind_prefix}bench-build $(($(now) - t))s ($built)"

# ---- this checkout on a fresh site -----------------------------------------
t=$(now)
log=$cache/${kind_prefix}${desk:+desk-}site-$key.log
: >"$log"
ln -sfn "$root" "$bench_dir/apps/agent_update"
mapfile -t reqs <<<"$requirements"
logged "$log" "$bench_dir/env/bin/python" -m pip install -e "$root" "${reqs[@]}"
apps=$bench_dir/sites/apps.txt
grep -qx agent_update "$apps" || {
  [ -z "$(tail -c1 "$apps")" ] || echo >>"$apps"
  echo agent_update >>"$apps"
}
cd "$bench_dir"
# Fresh each run, so the site's doctypes are exactly this checkout's. The root
# password goes on stdin (new-site asks for it even when given on the command line).
# The framework's own tables (and Press's, on the Press bench) come from a dump made
# by the first run on this bench: importing it is about 4 times faster than
# new-site's schema sync (and than Press's install-app).
base_sql=$bench_dir/frappe-site.sql
new_site=(bench new-site "$site" --force --admin-password admin --no-mariadb-socket)
[ ! -f "$base_sql" ] || new_site+=(--source-sql "$base_sql")
printf '%s\n' "$db_root_password" | logged "$log" "${new_site[@]}"
if [ ! -f "$base_sql" ]; then
  # CI=1: Press's after_migrate would otherwise try to download a chromedriver
  [ -z "$press" ] || CI=1 logged "$log" bench --site "$site" install-app press
  db_name=$("$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["db_name"])' \
    "sites/$site/site_config.json")
  mysql_root mariadb-dump --single-transaction "$db_name" >"$base_sql.tmp"
  mv "$base_sql.tmp" "$base_sql"
fi
# `site_python CODE`: Python on the site, connected (bench execute wants the app installed).
site_python() {
  (cd sites && logged "$log" ../env/bin/python -c "import frappe; frappe.init(site='$site'); frappe.connect()
$1
frappe.db.commit(); frappe.destroy()")
}
# apps.txt changed since the cache last saw it: clear it before install-app (docs/frappe.md)
logged "$log" bench --site "$site" clear-cache
# Press's doctypes and one record of its own Agent Update, before this app arrives:
# the coexistence tests compare them after install-app and two migrates.
[ -z "$press" ] || site_python "from agent_update.agent_update.tests import coexist; print(coexist.snapshot())"
CI=1 logged "$log" bench --site "$site" install-app agent_update
if [ -z "$desk" ]; then
  # Twice: a second migrate must find nothing left to change (docs/press.md).
  CI=1 logged "$log" bench --site "$site" migrate
  CI=1 logged "$log" bench --site "$site" migrate
  logged "$log" bench --site "$site" set-config allow_tests true
else
  # The benchmark's workers take the app's own queue, declared in this site's
  # config only: the bench's common config (and the test site's queue) stay as they are.
  logged "$log" bench --site "$site" set-config -p workers '{"agent_update": {"timeout": 7200}}'
fi
# Jobs an earlier run left queued (this bench's queues only) would reach the new site's workers.
(cd sites && logged "$log" ../env/bin/python -c "import frappe; frappe.init(site='$site')
from frappe.utils.background_jobs import get_queue, get_queue_list
for q in get_queue_list(): get_queue(q).empty()")
echo "timing: ${kind_prefix}${desk:+desk-}site $(($(now) - t))s"

# The desk benchmark instead of the tests; its site goes away after it (docs/desk-bench.md).
if [ -n "$desk" ]; then
  set +e
  # shellcheck disable=SC2086 # its options, split as on a command line
  (cd sites && ../env/bin/python "$root/benchmarks/desk.py" --site "$site" ${AGENT_UPDATE_DESK_BENCH_ARGS:-})
  rc=$?
  set -e
  printf '%s\n' "$db_root_password" | logged "$log" bench drop-site "$site" --force --no-backup
  rm -rf "archived/sites/$site"*
  exit "$rc"
fi

# The tests know which bench they are on: the Press site runs the Press set.
set +e
AGENT_UPDATE_BENCH=$bench_dir AGENT_UPDATE_SITE=$site AGENT_UPDATE_EXPECT_PRESS=${press:-0} \
  AGENT_UPDATE_BENCH_LABEL=${press:+press} bash "$root/scripts/frappe-tests.sh"
rc=$?
set -e
[ "$rc" -eq 0 ] || exit "$rc"

# ---- and away again: uninstall-app leaves every other app's doctypes as they were
t=$(now)
logged "$log" bench --site "$site" uninstall-app agent_update --yes --no-backup
site_python "from agent_update.agent_update.tests import coexist; print(coexist.check_uninstalled())"
echo "timing: ${kind_prefix}uninstall $(($(now) - t))s"

# ---- a site made by the app before its doctypes were renamed (docs/press.md) --
# The app as of OLD_APP_COMMIT (from this clone's history) installs and fills
# the old doctypes; this checkout migrates the site; every record must be there
# under the new names. Plain bench only: the old app never installed beside Press.
[ -z "$press" ] || exit 0
t=$(now)
old_commit=3df49dfedb752d03ab888b568d3d1afaff2b1784 # the last commit with Agent Update as this app's doctype
old_app=$cache/app-${old_commit:0:12}
if [ ! -f "$old_app/agent_update/hooks.py" ]; then
  git -C "$root" cat-file -e "$old_commit^{commit}" 2>/dev/null ||
    die "commit $old_commit (the app before the rename) is not in this clone; fetch its full history"
  rm -rf "$old_app" "$old_app.tmp"
  mkdir -p "$old_app.tmp"
  git -C "$root" archive "$old_commit" | tar -x -C "$old_app.tmp"
  mv "$old_app.tmp" "$old_app"
fi
up=upgrade.localhost
printf '%s\n' "$db_root_password" |
  logged "$log" bench new-site "$up" --force --admin-password admin --no-mariadb-socket --source-sql "$base_sql"
# PYTHONPATH comes before the bench env's editable install: `agent_update` is the old app
PYTHONPATH=$old_app logged "$log" bench --site "$up" install-app agent_update
(cd sites && PYTHONPATH=$old_app logged "$log" ../env/bin/python "$root/scripts/frappe_upgrade.py" seed "$up")
CI=1 PYTHONPATH=$root logged "$log" bench --site "$up" migrate
(cd sites && PYTHONPATH=$root logged "$log" ../env/bin/python "$root/scripts/frappe_upgrade.py" check "$up")
grep '^upgrade: ' "$log" | tail -1
printf '%s\n' "$db_root_password" | logged "$log" bench drop-site "$up" --force --no-backup
rm -rf "archived/sites/$up"*
echo "timing: upgrade $(($(now) - t))s"

# ---- the desk under faults: a site of its own on a private MariaDB and Redis --
# One rollout through RQ workers while the worker running a job is killed and the
# site's Redis and MariaDB restart (agent_update/testing/desk_check.py, docs/soak.md).
t=$(now)
(cd /tmp && PYTHONPATH=$root "$bench_dir/env/bin/python" -m agent_update.testing.desk_check --bench "$bench_dir")
echo "timing: desk-check $(($(now) - t))s"

# ---- the soak's short form through both doors (docs/soak.md): 8 hosts, two of them
# the desk's, two minutes of faults, a fixed seed (a failure prints how to replay it).
t=$(now)
(cd /tmp && PYTHONPATH=$root "$bench_dir/env/bin/python" -m agent_update.testing.soak --minutes 2 \
  --hosts 8 --concurrent 1 --desk "$bench_dir" --desk-workers 4 --seed 20261207)
echo "timing: desk-soak $(($(now) - t))s"
