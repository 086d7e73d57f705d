"""Config rules and hostile input: clear errors naming the field, nothing runs."""

from __future__ import annotations

import pytest

from agent_update.rollout import commands, rules
from agent_update.rollout.errors import TransitionError, ValidationError
from agent_update.rollout.model import EngineSettings, Row, RowStatus, Update, UpdateStatus
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
