"""The update command (script.py) and the supervisor status reading (supervisor.py)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from agent_update.remote.script import (
    DEFAULT_UPDATE_TEMPLATE,
    render_status_command,
    render_update_command,
    template_placeholders,
)
from agent_update.remote.supervisor import (
    agent_programs,
    parse_status,
)
from agent_update.rollout.errors import ValidationError

SHA = "0123456789abcdef0123456789abcdef01234567"
ARGS = dict(
    agent_dir="/home/frappe/agent",
    repo_url="https://github.com/frappe/agent",
    commit=SHA.upper(),
    restart_web=True,
    restart_rq=False,
    restart_redis=False,
)

# -- script.py ------------------------------------------------------------


def test_default_command_shape() -> None:
    text = render_update_command(**ARGS)
    lines = text.splitlines()
    assert lines[0] == "set -e"
    assert "cd /home/frappe/agent/repo" in lines
    assert f"git checkout --force {SHA}" in lines
    assert f"git reset --hard {SHA}" in lines
    assert (
        "--restart-web-workers=true --restart-rq-workers=false" in text
        and "--restart-redis=false --skip-repo-setup=true --skip-patches=true" in text
    )
    assert lines[-1] == "sudo -n supervisorctl start agent:"  # the socket is root-only
    assert subprocess.run(["sh", "-n", "-c", text], check=False).returncode == 0


def test_template_has_exactly_the_documented_placeholders() -> None:
    assert template_placeholders(DEFAULT_UPDATE_TEMPLATE) == {
        "agent_dir",
        "repo_url",
        "commit",
        "restart_web",
        "restart_rq",
        "restart_redis",
    }


def test_values_are_validated_before_rendering() -> None:
    for key, bad, field in [
        ("agent_dir", "/x; rm -rf /", "agent_dir"),
        ("repo_url", "https://h/x;id", "repo"),
        ("commit", "HEAD; id", "commit"),
        ("restart_web", "yes", "restart_web"),
    ]:
        with pytest.raises(ValidationError) as info:
            render_update_command(**{**ARGS, key: bad})
        assert info.value.field == field


def test_custom_template_quotes_values() -> None:
    text = render_update_command(
        **{**ARGS, "repo_url": "git@host:a/b.git"},
        template="echo $repo_url ${commit} $$HOME $restart_rq",
    )
    assert text == f"echo git@host:a/b.git {SHA} $HOME false"


@pytest.mark.parametrize("template", ["echo $comit", "echo ${agent}", "echo $ 1", "", "  "])
def test_custom_template_rejects_unknown_or_stray(template: str) -> None:
    with pytest.raises(ValidationError) as info:
        render_update_command(**ARGS, template=template)
    assert info.value.field == "update_command_template"


def test_status_command() -> None:
    assert render_status_command() == "sudo -n supervisorctl status 2>&1; true"
    with pytest.raises(ValidationError):
        render_status_command("a\nb")


def _git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    out = subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def _stub(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture()
def agent_home(tmp_path: Path) -> tuple[Path, Path, list[str], dict[str, str]]:
    """An agent dir whose repo clones a local upstream; pip/agent/sudo/supervisorctl stubbed."""
    upstream, work = tmp_path / "upstream.git", tmp_path / "work"
    _git(tmp_path, "init", "-q", "--bare", "-b", "master", str(upstream))
    _git(tmp_path, "init", "-q", "-b", "master", str(work))
    commits = []
    for i in range(2):
        (work / "requirements.txt").write_text(f"# {i}\n")
        _git(work, "add", ".")
        _git(work, "commit", "-q", "-m", f"c{i}")
        commits.append(_git(work, "rev-parse", "HEAD"))
    _git(work, "push", "-q", str(upstream), "master")
    agent = tmp_path / "agent"
    _git(tmp_path, "clone", "-q", str(upstream), str(agent / "repo"))
    _git(agent / "repo", "checkout", "-q", commits[0])
    log = tmp_path / "calls.log"
    _stub(agent / "env/bin/pip", f'echo "pip $*" >> {log}')
    _stub(agent / "env/bin/agent", f'echo "agent $*" >> {log}')
    _stub(tmp_path / "bin/supervisorctl", f'echo "supervisorctl $*" >> {log}')
    _stub(tmp_path / "bin/sudo", '[ "$1" = -n ] && shift; exec "$@"')  # root's sudo, minus PAM
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    return agent, upstream, commits, env | {"LOG": str(log)}


def test_default_command_really_updates(agent_home) -> None:
    agent, upstream, commits, env = agent_home
    cmd = render_update_command(
        agent_dir=str(agent),
        repo_url=str(upstream),
        commit=commits[1],
        restart_web=True,
        restart_rq=True,
        restart_redis=False,
    )
    result = subprocess.run(["sh", "-c", cmd], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert _git(agent / "repo", "rev-parse", "HEAD") == commits[1]
    calls = Path(env["LOG"]).read_text().splitlines()
    assert calls[0] == "pip install -r ./repo/requirements.txt"
    assert "agent setup database" in calls
    assert any("--restart-rq-workers=true" in c for c in calls)
    assert calls[-1] == "supervisorctl start agent:"


def test_failed_checkout_stops_the_command(agent_home) -> None:
    agent, upstream, _commits, env = agent_home
    cmd = render_update_command(
        agent_dir=str(agent),
        repo_url=str(upstream),
        commit="f" * 40,
        restart_web=True,
        restart_rq=False,
        restart_redis=False,
    )
    result = subprocess.run(["sh", "-c", cmd], env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert not Path(env["LOG"]).exists()  # nothing installed or restarted


# -- supervisor.py --------------------------------------------------------

STATUS = """\
agent:redis                      RUNNING   pid 101, uptime 1:02:03
agent:web                        RUNNING   pid 102, uptime 0:00:05
agent:worker-0                   RUNNING   pid 103, uptime 0:00:05
agent:worker-1                   STARTING
agent:worker_backup-0            BACKOFF   Exited too quickly (process log may have details)
agent:nginx_reload_manager       STOPPED   Not started
other                            FATAL     Exited too quickly (process log may have details)
unix:///tmp/x.sock refused connection
"""


def test_parse_status() -> None:
    states = parse_status(STATUS)
    assert set(states) == {
        "agent:redis",
        "agent:web",
        "agent:worker-0",
        "agent:worker-1",
        "agent:worker_backup-0",
        "agent:nginx_reload_manager",
        "other",
    }
    assert states["agent:web"].pid == 102 and states["agent:web"].running
    assert states["agent:worker-1"].state == "STARTING" and states["agent:worker-1"].pid is None
    assert states["agent:worker_backup-0"].description.startswith("Exited too quickly")
    assert states["other"].state == "FATAL"
    assert "other" not in agent_programs(states)
    assert agent_programs(states)["agent:redis"].pid == 101


def test_a_bad_rollback_commit_names_rollback_commit() -> None:
    """A rollback's target is not the update's commit: its error names its own field."""
    with pytest.raises(ValidationError) as info:
        render_update_command(**{**ARGS, "commit": "abc123"}, commit_field="rollback_commit")
    assert info.value.field == "rollback_commit"
    assert str(info.value).startswith("rollback_commit: 'abc123' is not a full commit id")


def test_the_link_names_the_field_of_the_commit_it_could_not_use() -> None:
    """Through the SSH link (no connection made: the command is refused before)."""
    from agent_update.remote.connector import SshConnector
    from agent_update.rollout.model import EngineSettings, Server, Update

    update = Update(name="U1", repo=ARGS["repo_url"], branch="master", commit=SHA)
    server = Server(name="s1", host="127.0.0.1", agent_url="http://127.0.0.1:25052")
    link = SshConnector(EngineSettings()).open(server, update)
    rollback = link.run_command("abc123", 60)
    assert rollback.not_started and rollback.exit_code is None
    assert "rollback_commit: 'abc123' is not a full commit id" in rollback.error
    update = Update(name="U2", repo=ARGS["repo_url"], branch="master", commit="abc123")
    forward = SshConnector(EngineSettings()).open(server, update).run_command("abc123", 60)
    assert "commit: 'abc123' is not a full commit id" in forward.error
    assert "rollback_commit" not in forward.error
