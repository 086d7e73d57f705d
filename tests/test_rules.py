"""Config rules and hostile input: clear errors naming the field, nothing runs."""

from __future__ import annotations

import sqlite3

import pytest

from agent_update.remote.connector import SshConnector
from agent_update.rollout import commands, rules
from agent_update.rollout.errors import TransitionError, ValidationError
from agent_update.rollout.model import (
    EngineSettings,
    Row,
    RowStatus,
    Server,
    Update,
    UpdateStatus,
)
from agent_update.rollout.store import SqliteStore
from agent_update.service import Service

GOOD = "a" * 40


def valid(**kw) -> Update:
    base = dict(repo="https://git.example.com/agent.git", branch="master", commit=GOOD)
    base.update(kw)
    return Update(**base)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (dict(restart_web=False), "restart_web"),
        (dict(restart_redis=True), "restart_redis"),
        (dict(restart_redis=True, restart_rq=True, restart_web=False), "restart_redis"),
        (dict(rollback_to_specific=True), "rollback_commit"),
        (dict(rollback_to_specific=True, rollback_commit="xyz"), "rollback_commit"),
        (dict(rollback_to_specific=True, rollback_commit=GOOD), "rollback_commit"),
        (
            dict(rollback_to_specific=True, auto_rollback=False, rollback_commit="b" * 40),
            "rollback_to_specific",
        ),
        (dict(startup_timeout=0), "startup_timeout"),
        (dict(command_timeout=60, startup_timeout=600), "command_timeout"),
        (dict(bake_time=-1), "bake_time"),
        (dict(bake_time=600), "bake_time"),
        (dict(lanes=0), "lanes"),
        (dict(test_mode=True, test_mode_count=0), "test_mode_count"),
        (dict(failure_budget=-1), "failure_budget"),
        (dict(repo=""), "repo"),
        (dict(branch=""), "branch"),
    ],
)
def test_each_rule_names_its_field(changes, field):
    with pytest.raises(ValidationError) as err:
        rules.validate_update(valid(**changes))
    assert err.value.field == field


def test_redis_with_both_others_is_fine_and_defaults_fill_source():
    rules.validate_update(valid(restart_redis=True, restart_rq=True))
    filled = rules.apply_defaults(
        Update(), EngineSettings(default_repo="/srv/agent.git", default_branch="main")
    )
    assert (filled.repo, filled.branch) == ("/srv/agent.git", "main")


HOSTILE = [
    "master; touch /tmp/agent-update-pwned",
    "$(id)",
    "`id`",
    "master\nid",
    "a b",
    "--upload-pack=id",
]


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("field", ["branch", "commit", "repo", "rollback_commit"])
def test_hostile_values_are_rejected_before_anything_runs(tmp_path, value, field):
    marker = tmp_path / "ran"
    store = SqliteStore(tmp_path / "s.db")
    service = Service(store, EngineSettings(git_cache_dir=str(tmp_path / "git")))
    changes = {field: value.replace("/tmp/agent-update-pwned", str(marker))}
    if field == "rollback_commit":
        changes["rollback_to_specific"] = True
    with pytest.raises(ValidationError) as err:
        service.create(valid(**changes))
    assert err.value.field == field
    assert not marker.exists()
    assert not (tmp_path / "git").exists()  # not even git was asked


def test_a_later_hostile_edit_is_caught_at_start(tmp_path):
    """Values are re-checked at every step, not only when first inserted."""
    store = SqliteStore(tmp_path / "s.db")
    service = Service(store, EngineSettings())
    update = store.insert_update(
        valid(status=UpdateStatus.PENDING, branch="master; id"),
        [Row(idx=1, server="s1", status=RowStatus.PENDING)],
    )
    with pytest.raises(ValidationError) as err:
        service.start(update.name)
    assert err.value.field == "branch"
    assert store.get_update(update.name).status is UpdateStatus.PENDING


def test_force_continue_past_the_deadline_is_refused_and_changes_nothing(tmp_path):
    """It would end the rollout at once, its failed rows reset for nothing."""
    store = SqliteStore(tmp_path / "s.db")
    service = Service(store, EngineSettings(), clock=lambda: 2000.0)
    failed = Row(idx=1, server="s1", status=RowStatus.FAILURE, reason="x", log="attempt 1")
    update = store.insert_update(
        valid(status=UpdateStatus.PARTIAL_SUCCESS, deadline_at=1000.0), [failed]
    )
    with pytest.raises(ValidationError) as err:
        service.force_continue(update.name)
    assert err.value.field == "deadline_at"
    assert store.get_update(update.name).status is UpdateStatus.PARTIAL_SUCCESS
    row = store.get_row(update.name, 1)
    assert (row.status, row.log) == (RowStatus.FAILURE, "attempt 1")


def test_buttons_only_apply_in_their_states():
    draft = valid()
    with pytest.raises(TransitionError):
        commands.pause(draft)
    with pytest.raises(TransitionError):
        commands.resume(draft.copy(status=UpdateStatus.RUNNING))
    with pytest.raises(TransitionError):
        commands.force_continue(draft.copy(status=UpdateStatus.SUCCESS), [])
    with pytest.raises(ValidationError) as err:
        commands.start(draft.copy(status=UpdateStatus.PENDING), [Row(idx=1, server="s")], 0)
    assert err.value.field == "servers"
    resumed = commands.start(draft.copy(status=UpdateStatus.PAUSED), [], 0)
    assert resumed.status is UpdateStatus.RUNNING  # Resume after Pause works


def test_force_continue_keeps_the_failed_attempts_log():
    failed = Row(
        idx=1,
        server="s1",
        status=RowStatus.FAILURE,
        reason="precheck: agent:web is STOPPED",
        log="precheck failed: agent:web is STOPPED",
        started_at=5.0,
    )
    ok = Row(idx=2, server="s2", status=RowStatus.SUCCESS, log="done")
    update, changed = commands.force_continue(
        valid(status=UpdateStatus.PARTIAL_SUCCESS), [failed, ok]
    )
    assert update.status is UpdateStatus.RUNNING
    [row] = changed
    assert row.idx == 1 and row.status is RowStatus.PENDING
    assert row.started_at is None and row.reason == ""
    assert row.log.splitlines() == [
        "precheck failed: agent:web is STOPPED",
        "force continue: retried after Failure: precheck: agent:web is STOPPED",
    ]


# -- server fields and settings (every value that reaches a shell or a URL) --

GOOD_SERVER = dict(
    name="web1",
    host="10.0.0.5",
    ssh_port=22,
    ssh_user="root",
    agent_user="frappe",
    agent_dir="/home/frappe/agent",
    agent_url="https://web1.example.com/agent",
)


@pytest.mark.parametrize(
    "field, value",
    [
        ("host", "10.0.0.5; id"),
        ("host", "-oProxyCommand=id"),
        ("host", "a b"),
        ("host", "300.1.1.1"),
        ("host", ""),
        ("ssh_port", 0),
        ("ssh_port", 70000),
        ("ssh_port", "22"),
        ("ssh_user", "root; id"),
        ("ssh_user", "$(id)"),
        ("ssh_user", ""),
        ("agent_user", "frappe -H -u root"),
        ("agent_user", "Frappe"),
        ("agent_user", "-frappe"),
        ("agent_user", "x" * 33),
        ("agent_dir", "/home/frappe/agent; rm -rf /"),
        ("agent_dir", "relative/agent"),
        ("agent_dir", "/home/../etc"),
        ("agent_url", "ftp://web1/agent"),
        ("agent_url", "https://user:pw@web1/agent"),
        ("agent_url", "https://web1/agent?x=1"),
        ("agent_url", "https://web1:99999/agent"),
        ("agent_url", "https://web1/a b"),
        ("agent_url", ""),
        ("name", " "),
    ],
)
def test_hostile_or_broken_server_fields_are_refused_at_save(tmp_path, field, value):
    store = SqliteStore(tmp_path / "s.db")
    with pytest.raises(ValidationError) as err:
        store.save_server(Server(**{**GOOD_SERVER, field: value}))
    assert err.value.field == field
    assert store.list_servers() == []


def test_a_good_server_is_saved_normalised(tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    store.save_server(Server(**{**GOOD_SERVER, "agent_url": " https://web1:8443/agent/ "}))
    saved = store.get_server("web1")
    assert saved is not None and saved.agent_url == "https://web1:8443/agent"
    assert saved.agent_user == "frappe" and Server(name="x", host="h").agent_user == "frappe"


@pytest.mark.parametrize(
    "template, why",
    [
        ("echo $comit", "unknown placeholder"),
        ("echo 'unterminated $commit", "not a valid shell script"),
        ("if true; then echo $commit", "not a valid shell script"),
        ("echo $ 1", "stray '$'"),
        ("   ", None),  # blank: the default template
    ],
)
def test_a_broken_template_is_refused_when_the_settings_are_loaded(tmp_path, template, why):
    settings = EngineSettings(update_command_template=template)
    if why is None:
        SshConnector(settings)
        return
    with pytest.raises(ValidationError) as err:
        Service(SqliteStore(tmp_path / "s.db"), settings)
    assert err.value.field == "update_command_template" and why in err.value.message


def test_a_broken_status_command_is_refused(tmp_path):
    with pytest.raises(ValidationError) as err:
        SshConnector(EngineSettings(status_command="sudo -n supervisorctl status\nid"))
    assert err.value.field == "status_command"


def test_an_older_database_gains_the_new_server_column(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute(
            'CREATE TABLE servers ("name" TEXT, "host" TEXT, "server_type" TEXT, '
            '"ssh_port" INTEGER, "ssh_user" TEXT, "agent_dir" TEXT, "agent_url" TEXT, '
            '"agent_password" TEXT, "status" TEXT, "disable_agent_update" INTEGER, '
            '"self_hosted" INTEGER, PRIMARY KEY ("name"))'
        )
        db.execute(
            "INSERT INTO servers VALUES ('web1', '10.0.0.5', 'Server', 22, 'frappe', "
            "'/home/frappe/agent', 'https://web1/agent', 'pw', 'Active', 0, 0)"
        )
    store = SqliteStore(path)
    server = store.get_server("web1")
    assert server is not None and server.agent_user == "frappe" and server.agent_password == "pw"
    store.save_server(server.copy(agent_user="agent"))
    assert store.get_server("web1").agent_user == "agent"  # type: ignore[union-attr]
