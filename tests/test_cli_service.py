"""The service behind `run`: the rollback commit re-checked at Build Plan and Start,
and a start decided under the lock."""

from __future__ import annotations

import subprocess

import pytest

from agent_update.rollout.errors import TransitionError, ValidationError
from agent_update.rollout.model import EngineSettings, Row, RowStatus, Update, UpdateStatus
from agent_update.rollout.store import SqliteStore
from agent_update.service import Service


def git(cwd, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture
def upstream(tmp_path):
    """A local repository: master with two commits, branch side with one more."""
    repo = tmp_path / "upstream"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "master")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    for text in ("one", "two"):
        (repo / "f").write_text(text)
        git(repo, "add", "f")
        git(repo, "commit", "-qm", text)
    git(repo, "checkout", "-q", "-b", "side")
    (repo / "f").write_text("side")
    git(repo, "commit", "-qam", "side")
    side = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "master")
    return repo, side


def service_for(tmp_path, repo) -> Service:
    settings = EngineSettings(
        default_repo=str(repo), default_branch="master", git_cache_dir=str(tmp_path / "cache")
    )
    return Service(SqliteStore(tmp_path / "au.db"), settings)


def test_a_vanished_rollback_commit_is_refused_at_build_plan_and_start(tmp_path, upstream):
    repo, side = upstream
    service = service_for(tmp_path, repo)
    update = service.create(Update(rollback_to_specific=True, rollback_commit=side))
    git(repo, "branch", "-D", "side")  # a force push removed it

    with pytest.raises(ValidationError) as planned:
        service.build_plan(update.name)
    assert planned.value.field == "rollback_commit" and side in str(planned.value)
    assert service.store.get_update(update.name).status is UpdateStatus.DRAFT

    pending = update.copy(status=UpdateStatus.PENDING)
    service.store.save_update(pending, ["status"])
    service.store.replace_rows(update.name, [Row(idx=1, server="s1", status=RowStatus.PENDING)])
    for start in (service.start, service.start_if_ready):
        with pytest.raises(ValidationError) as started:
            start(update.name)
        assert started.value.field == "rollback_commit"
    assert service.store.get_update(update.name).status is UpdateStatus.PENDING


def test_a_bad_rollback_commit_stored_behind_the_rules_is_named_rollback_commit(tmp_path, upstream):
    repo, side = upstream
    service = service_for(tmp_path, repo)
    update = service.create(Update(rollback_to_specific=True, rollback_commit=side))
    service.store.save_update(update.copy(rollback_commit="abc123"), ["rollback_commit"])
    with pytest.raises(ValidationError) as planned:
        service.build_plan(update.name)
    assert planned.value.field == "rollback_commit"
    assert str(planned.value).startswith("rollback_commit: 'abc123' is not a full commit id")

    pending = update.copy(status=UpdateStatus.PENDING, rollback_commit="abc123")
    service.store.save_update(pending, ["status"])
    service.store.replace_rows(update.name, [Row(idx=1, server="s1", status=RowStatus.PENDING)])
    for start in (service.start, service.start_if_ready):
        with pytest.raises(ValidationError) as started:
            start(update.name)
        assert str(started.value).startswith("rollback_commit: 'abc123'"), started.value
    assert service.store.get_update(update.name).status is UpdateStatus.PENDING


def test_start_if_ready_follows_what_another_runner_started(tmp_path, upstream):
    repo, _ = upstream
    service = service_for(tmp_path, repo)
    update = service.create(Update())
    with pytest.raises(TransitionError, match="Draft"):
        service.start_if_ready(update.name)
    service.store.save_update(update.copy(status=UpdateStatus.RUNNING), ["status"])
    assert service.start_if_ready(update.name).status is UpdateStatus.RUNNING  # no error
    service.store.save_update(update.copy(status=UpdateStatus.PAUSED), ["status"])
    assert service.start_if_ready(update.name).status is UpdateStatus.PAUSED
