"""The shell command run on a server to update its agent (docs/design.md §3).

It mirrors the agent's own update procedure, but under ``set -e`` (the tool
we replace let a failed checkout "succeed") and with every value validated
and shell-quoted each time it is rendered, not once at insert time. One
line is added before ``agent update``: it starts any program left down by a
failed attempt, since the agent restarts nothing while a program is down, and
a rollback would otherwise leave the failed commit's code running.
Supervisor is reached with ``sudo -n supervisorctl``: on a standard server
supervisord runs as root with a root-only socket (docs/design.md §3, §9). How the
command is run (as the agent user, locked, bounded) is ``guard.py``'s job.
Pure, except ``validate_template`` which asks the local ``sh`` to parse.
"""

from __future__ import annotations

import functools
import shlex
import shutil
import subprocess
from string import Template

from agent_update.rollout.errors import ValidationError
from agent_update.rollout.refs import validate_agent_dir, validate_commit, validate_repo_url

PLACEHOLDERS = frozenset(
    {"agent_dir", "repo_url", "commit", "restart_web", "restart_rq", "restart_redis"}
)

DEFAULT_UPDATE_TEMPLATE = """\
set -e
cd $agent_dir/repo
git remote set-url upstream $repo_url 2>/dev/null || git remote add upstream $repo_url
git fetch upstream
git checkout --force $commit
git reset --hard $commit
git clean -fd
cd $agent_dir
./env/bin/pip install -r ./repo/requirements.txt
./env/bin/pip install -e ./repo
./env/bin/agent setup database
./env/bin/agent run-patches
sudo -n supervisorctl start agent: >/dev/null 2>&1 || true
./env/bin/agent update --restart-web-workers=$restart_web --restart-rq-workers=$restart_rq \
--restart-redis=$restart_redis --skip-repo-setup=true --skip-patches=true
sudo -n supervisorctl start agent:
"""

# `sudo -n`: a missing sudo right fails at once ("a password is required")
# instead of waiting for a password nobody will type.
DEFAULT_STATUS_COMMAND = "sudo -n supervisorctl status"
TEMPLATE_FIELD = "update_command_template"


def template_placeholders(template: str, field: str = TEMPLATE_FIELD) -> set[str]:
    """Names used by ``template``; ValidationError on unknown or malformed ones.

    Checked up front so a typo in the settings fails when saved, not halfway
    through a rollout.
    """
    if not isinstance(template, str) or not template.strip():
        raise ValidationError(field, "the update command template is empty")
    names: set[str] = set()
    for match in Template.pattern.finditer(template):
        if match.group("invalid") is not None:
            line = template.count("\n", 0, match.start()) + 1
            snippet = template[match.start() : match.start() + 20]
            raise ValidationError(
                field, f"line {line}: stray '$' at {snippet!r}; write '$$' for a literal '$'"
            )
        name = match.group("named") or match.group("braced")
        if name is None:
            continue
        if name not in PLACEHOLDERS:
            known = ", ".join(f"${n}" for n in sorted(PLACEHOLDERS))
            raise ValidationError(field, f"unknown placeholder ${name!r}; known: {known}")
        names.add(name)
    return names


def _flag(value: object, name: str) -> str:
    if not isinstance(value, bool):
        raise ValidationError(name, f"{name} must be true or false, got {value!r}")
    return "true" if value else "false"


def render_update_command(
    *,
    agent_dir: str,
    repo_url: str,
    commit: str,
    restart_web: bool,
    restart_rq: bool,
    restart_redis: bool,
    template: str | None = None,
) -> str:
    """The command that installs ``commit`` on one server, ready for ``sh -c``.

    Every value is validated with refs.py and then shlex-quoted, so even a
    custom template cannot be fed shell syntax through a value.
    """
    text = DEFAULT_UPDATE_TEMPLATE if template is None else template
    template_placeholders(text)
    values = {
        "agent_dir": validate_agent_dir(agent_dir),
        "repo_url": validate_repo_url(repo_url),
        "commit": validate_commit(commit),
        "restart_web": _flag(restart_web, "restart_web"),
        "restart_rq": _flag(restart_rq, "restart_rq"),
        "restart_redis": _flag(restart_redis, "restart_redis"),
    }
    return Template(text).substitute({k: shlex.quote(v) for k, v in values.items()})


def render_status_command(status_command: str = DEFAULT_STATUS_COMMAND) -> str:
    """The command that lists program states; output is parsed, exit code ignored.

    ``supervisorctl status`` exits 3 when a program is not running, so the
    ``; true`` keeps that from looking like a transport failure.
    """
    text = status_command.strip() if isinstance(status_command, str) else ""
    if not text or any(ord(ch) < 32 for ch in text):
        raise ValidationError(
            "status_command", f"status command {status_command!r} must be one non-empty line"
        )
    return f"{text} 2>&1; true"


SAMPLE_VALUES: dict[str, object] = {
    "agent_dir": "/home/frappe/agent",
    "repo_url": "https://git.example.com/frappe/agent.git",
    "commit": "0123456789abcdef0123456789abcdef01234567",
    "restart_web": True,
    "restart_rq": True,
    "restart_redis": False,
}


def validate_template(template: str | None, field: str = TEMPLATE_FIELD) -> None:
    """Render ``template`` (empty: the default) with sample values and parse it with sh.

    Run when the settings are saved or loaded, so a template that cannot be
    built, or that the shell cannot parse, never reaches a server.
    """
    text = template if template and template.strip() else None
    try:
        rendered = render_update_command(template=text, **SAMPLE_VALUES)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ValidationError(field, exc.message) from exc
    except (KeyError, ValueError) as exc:
        raise ValidationError(field, f"cannot be rendered: {exc}") from exc
    problem = _shell_syntax_problem(rendered)
    if problem:
        raise ValidationError(field, f"is not a valid shell script: {problem}")


@functools.lru_cache(maxsize=32)
def _shell_syntax_problem(text: str) -> str:
    """What ``sh -n`` says about ``text`` ('' when it parses, or when there is no sh)."""
    sh = shutil.which("sh")
    if sh is None:
        return ""
    done = subprocess.run(
        [sh, "-n", "-c", text], capture_output=True, text=True, timeout=10, check=False
    )
    if done.returncode == 0:
        return ""
    detail = (done.stderr or done.stdout).strip().splitlines()
    return detail[-1] if detail else "sh -n failed"
