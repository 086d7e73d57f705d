"""The pure parts of `agent-update`'s waiting and printing."""

from __future__ import annotations

import io

from agent_update.cli.follow import failures, settled, waiting_note
from agent_update.cli.output import LiveView, progress_lines, server_lines, summary
from agent_update.rollout.model import Row, RowStatus, Server, Step, Update, UpdateStatus

NOW = 1_000_000.0


def rows() -> list[Row]:
    return [
        Row(idx=1, server="web1", status=RowStatus.SUCCESS, started_at=NOW - 9, ended_at=NOW - 5),
        Row(
            idx=2,
            server="web2",
            status=RowStatus.VERIFYING,
            step=Step.VERIFY,
            started_at=NOW - 4,
            lease_owner="other:1:x",
            lease_expires=NOW + 42,
        ),
        Row(
            idx=3,
            server="web3",
            status=RowStatus.RUNNING,
            step=Step.COMMAND_SENT,
            started_at=NOW - 2,
            lease_owner="me:2:y",
            lease_expires=NOW + 60,
        ),
        Row(idx=4, server="web4", status=RowStatus.PENDING),
    ]


def test_waiting_note_names_only_rows_another_live_runner_holds():
    note = waiting_note(rows(), mine={3}, now=NOW)
    assert note.startswith("waiting for web2 (Verifying): held by another runner")
    assert "within 42s" in note and "web3" not in note
    assert waiting_note(rows(), mine={2, 3}, now=NOW) == ""
    assert waiting_note(rows(), mine=set(), now=NOW + 100) == ""  # expired: taken over instead


def test_settled_means_nothing_more_happens_without_an_operator():
    update = Update(name="AU-1")
    ended = [r.copy(status=RowStatus.SUCCESS, step=Step.NONE) for r in rows()]
    for status in (UpdateStatus.SUCCESS, UpdateStatus.FAILURE, UpdateStatus.PARTIAL_SUCCESS):
        assert settled(update.copy(status=status), rows())
    assert not settled(update.copy(status=UpdateStatus.RUNNING), ended)  # the end is decided
    assert not settled(update.copy(status=UpdateStatus.PAUSED), rows())  # rows still in flight
    assert settled(update.copy(status=UpdateStatus.PAUSED), ended)


def test_progress_counts_and_rows_in_flight():
    update = Update(name="AU-1", status=UpdateStatus.RUNNING, started_at=NOW - 75)
    lines = progress_lines(update, rows(), NOW)
    assert lines[0] == "AU-1 Running  1:15  1/4 ended: 1 Pending, 1 Running, 1 Verifying, 1 Success"
    assert [line.split()[0] for line in lines[1:]] == ["web2", "web3"]
    assert summary([]) == "0/0 ended"


def test_live_view_is_quiet_off_a_terminal_and_redraws_on_one():
    quiet = io.StringIO()
    LiveView(quiet).draw(["a", "b"])  # StringIO is no terminal
    assert quiet.getvalue() == ""
    tty = io.StringIO()
    view = LiveView(tty, enabled=True)
    view.draw(["a", "b"])
    view.draw(["c"])
    assert tty.getvalue() == "a\nb\n\x1b[2F\x1b[Jc\n"


def test_server_list_shows_every_field_and_never_the_password():
    server = Server(
        name="db1", host="10.0.0.1", agent_password="s3cret", self_hosted=True, status="Archived"
    )
    (line,) = server_lines([server])
    assert "s3cret" not in line and "agent_password=yes" in line
    assert "self_hosted=yes" in line and "status=Archived" in line


def test_failures_are_news_once():
    seen = {r.idx: r.status for r in rows()}
    assert failures(seen, rows()) == []
    failed = rows()
    failed[1] = failed[1].copy(status=RowStatus.ROLLED_BACK, reason="failed, rolled back: boom")
    assert failures(seen, failed) == ["web2 Rolled Back: failed, rolled back: boom"]
    assert failures(seen, failed) == []  # said once
