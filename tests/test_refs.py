"""Every value reaching git or a remote shell is checked against an allowlist."""

from __future__ import annotations

import shlex
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_update.rollout.errors import ValidationError
from agent_update.rollout.refs import (
    validate_agent_dir,
    validate_branch,
    validate_commit,
    validate_repo_url,
)

SHA = "0123456789abcdef0123456789abcdef01234567"


def test_commit_lowercased_and_stripped() -> None:
    assert validate_commit(SHA.upper()) == SHA
    assert validate_commit(f" {SHA}\n") == SHA


@pytest.mark.parametrize(
    "value", ["", "abc123", SHA[:-1], SHA + "0", "g" * 40, f"{SHA[:39]};", None, 42]
)
def test_commit_rejects(value: object) -> None:
    with pytest.raises(ValidationError) as info:
        validate_commit(value, field="rollback_commit")
    assert info.value.field == "rollback_commit"


@pytest.mark.parametrize(
    "value", ["master", "main", "release/v15", "feature-x_1.2", "a/b/c", "v1.0.0-rc.1"]
)
def test_branch_accepts(value: str) -> None:
    assert validate_branch(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "-master",
        "/main",
        "main/",
        "a//b",
        "a..b",
        "main.",
        "main.lock",
        "a/.hidden",
        "x.lock/y",
        "@",
        "a@{1}",
        "has space",
        "tab\tx",
        "a~1",
        "a^",
        "a:b",
        "a?",
        "a*",
        "a[1]",
        "a\\b",
        "$(reboot)",
        "`id`",
        "a;b",
        "a|b",
        "a&b",
        "a'b",
        'a"b',
        "a\nb",
        "x" * 300,
    ],
)
def test_branch_rejects(value: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_branch(value)
    assert info.value.field == "branch"
    assert "branch" in info.value.message


def test_branch_error_quotes_value_safely() -> None:
    with pytest.raises(ValidationError) as info:
        validate_branch("a\nb")
    assert "'a\\nb'" in info.value.message


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="ab./-_@{}~^:lock 0", min_size=1, max_size=12))
def test_accepted_branches_are_accepted_by_git(value: str) -> None:
    try:
        accepted = validate_branch(value)
    except ValidationError:
        return
    result = subprocess.run(
        ["git", "check-ref-format", "--branch", accepted], capture_output=True, check=False
    )
    assert result.returncode == 0, accepted
    assert shlex.quote(accepted) == accepted  # nothing a shell would interpret


@pytest.mark.parametrize(
    "value",
    [
        "https://github.com/frappe/agent",
        "https://git.example.com:8443/group/sub/agent.git",
        "http://127.0.0.1:8000/agent.git",
        "ssh://git@github.com/frappe/agent.git",
        "ssh://git@host.example:2222/srv/agent.git",
        "git@github.com:frappe/agent.git",
        "host:agent.git",
        "file:///srv/git/agent.git",
        "/srv/git/agent.git",
        "https://example.com/~user/repo.git",
    ],
)
def test_repo_accepts(value: str) -> None:
    assert validate_repo_url(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "-uhttps://x/y",
        "--upload-pack=touch /tmp/x",
        "--upload-pack=x",
        "ext::sh -c touch% /tmp/pwned",
        "ext::foo",
        "fd::3",
        "ssh://-oProxyCommand=id/x",
        "ssh://git@-oProxyCommand=id/x",
        "-oProxyCommand=id:x",
        "git@host:-x",
        "https://github.com/a/b;reboot",
        "https://github.com/a/b|x",
        "https://github.com/a/b&x",
        "https://github.com/$(id)",
        "https://github.com/`id`",
        "https://github.com/a b",
        "https://github.com/a\tb",
        "https://github.com/a'b",
        'https://github.com/a"b',
        "https://github.com/a<b",
        "https://github.com/a{b}",
        "https://github.com/a?x=1",
        "https://github.com",
        "ftp://example.com/x.git",
        "relative/path.git",
        "./repo",
        "/srv/../etc/repo",
        "file://remote-host/x.git",
        "https://h:99999/x.git",
    ],
)
def test_repo_rejects(value: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_repo_url(value)
    assert info.value.field == "repo"


def test_repo_credentials_point_to_token_setting_and_are_not_echoed() -> None:
    with pytest.raises(ValidationError) as info:
        validate_repo_url("https://x-access-token:ghp_secret@github.com/frappe/agent")
    assert "token" in info.value.message
    assert "ghp_secret" not in str(info.value)


@pytest.mark.parametrize("value", ["/home/frappe/agent", "/opt/agent-1.2/", "/a_b/c+d"])
def test_agent_dir_accepts(value: str) -> None:
    assert validate_agent_dir(value) == value.rstrip("/")


@pytest.mark.parametrize(
    "value", ["", "/", "home/frappe", "/home/frappe agent", "/x/../y", "/x;y", "/$HOME", "/x/-y"]
)
def test_agent_dir_rejects(value: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_agent_dir(value)
    assert info.value.field == "agent_dir"
