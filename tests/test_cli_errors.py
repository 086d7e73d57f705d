"""Bad input to `agent-update`: one line on stderr naming the fix, a documented exit code.

Each case is run in-process through ``cli.run`` (argparse exits caught): no
network, no fleet. Every case failed on the old command (a traceback, a
silent acceptance, a wrong code or a message with stray quotes).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from agent_update import cli
from agent_update.cli.exits import Exit
from agent_update.rollout.model import Row, Server, Update
from agent_update.rollout.store import SqliteStore

COMMIT = "a" * 40


def call(*argv: str) -> int:
    try:
        return cli.run(list(argv))
    except SystemExit as exc:  # argparse's own exits
        return int(exc.code or 0)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A working directory with a ready database holding one Draft update."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AGENT_UPDATE_DB", raising=False)
    monkeypatch.delenv("AGENT_UPDATE_SETTINGS", raising=False)
    store = SqliteStore(tmp_path / "au.db")
    store.insert_update(Update(name="AU-draft", repo="/srv/agent.git", branch="master"), [])
    store.save_server(Server(name="web1", host="127.0.0.9", agent_url="http://127.0.0.9:1"))
    store.close()
    (tmp_path / "notdb").write_text("hello\n")
    (tmp_path / "other.db").touch()
    conn = sqlite3.connect(tmp_path / "other.db")
    conn.execute("CREATE TABLE notes (x)")
    conn.close()
    return tmp_path


def settings(home: Path, data: object, raw: str | None = None) -> str:
    path = home / "settings.json"
    path.write_text(raw if raw is not None else json.dumps(data))
    return str(path)


DB = ("--db", "au.db")
ADD = ("server-add", "web2", "--host", "127.0.0.9", "--agent-url", "http://127.0.0.9:1")

CASES = [
    # (id, argv builder, exit code, what stderr must say)
    ("db in a missing directory", lambda h: ["--db", "nodir/au.db", "status", "AU-draft"],
     Exit.USAGE, "--db: no database at nodir/au.db; create it with: agent-update"),
    ("mistyped db is not created", lambda h: ["--db", "au.dbb", "status", "AU-draft"],
     Exit.USAGE, "--db: no database at au.dbb"),
    ("db is a directory", lambda h: ["--db", str(h), "status", "AU-draft"],
     Exit.USAGE, "is a directory; name a database file"),
    ("db is not SQLite", lambda h: ["--db", "notdb", "status", "AU-draft"],
     Exit.USAGE, "--db: notdb is not an SQLite database"),
    ("db of another program", lambda h: ["--db", "other.db", "status", "AU-draft"],
     Exit.USAGE, "is an SQLite database of something else"),
    ("settings file missing", lambda h: [*DB, "--settings", "nope.json", "status", "AU-draft"],
     Exit.USAGE, "--settings: no file at nope.json"),
    ("settings not JSON",
     lambda h: [*DB, "--settings", settings(h, None, "{"), "status", "AU-draft"],
     Exit.USAGE, "not valid JSON: Expecting property name enclosed in double quotes at line 1"),
    ("settings a JSON list",
     lambda h: [*DB, "--settings", settings(h, [1]), "status", "AU-draft"],
     Exit.USAGE, "expected a JSON object of settings, got a list"),
    ("settings key file missing",
     lambda h: [*DB, "--settings", settings(h, {"ssh_private_key_file": "id_x"}), "status", "X"],
     Exit.USAGE, "ssh_private_key_file: no file at"),
    ("settings key file is a directory",
     lambda h: [*DB, "--settings", settings(h, {"known_hosts_file": str(h)}), "status", "X"],
     Exit.USAGE, "known_hosts_file: " + "{h} is not a regular file"),
    ("settings key not a key",
     lambda h: [*DB, "--settings", settings(h, {"ssh_private_key": "junk"}), "status", "X"],
     Exit.USAGE, "ssh_private_key: SSH private key setting is not an ed25519"),
    ("settings wrong type",
     lambda h: [*DB, "--settings", settings(h, {"poll_interval": "0.1"}), "status", "X"],
     Exit.USAGE, 'poll_interval: must be a number of seconds, got "0.1" (a string)'),
    ("settings bool for a number",
     lambda h: [*DB, "--settings", settings(h, {"plan_concurrency": True}), "status", "X"],
     Exit.USAGE, "plan_concurrency: must be a whole number, got true (a boolean)"),
    ("settings lease_ttl negative",
     lambda h: [*DB, "--settings", settings(h, {"lease_ttl": -5}), "status", "X"],
     Exit.USAGE, "lease_ttl: must be greater than 0, got -5"),
    ("settings poll_interval zero",
     lambda h: [*DB, "--settings", settings(h, {"poll_interval": 0}), "status", "X"],
     Exit.USAGE, "poll_interval: must be greater than 0, got 0"),
    ("settings unknown key",
     lambda h: [*DB, "--settings", settings(h, {"poll_intervall": 1}), "status", "X"],
     Exit.USAGE, "unknown setting poll_intervall; did you mean poll_interval?"),
    ("settings bad default branch",
     lambda h: [*DB, "--settings", settings(h, {"default_branch": "a b"}), "status", "X"],
     Exit.USAGE, "default_branch:"),
    ("test mode negative", lambda h: [*DB, "create", "--test-mode", "-1"],
     Exit.USAGE, "agent-update create: --test-mode: must be 0 or more, got -1"),
    ("startup timeout zero", lambda h: [*DB, "create", "--startup-timeout", "0"],
     Exit.USAGE, "--startup-timeout: must be more than 0 seconds, got 0"),
    ("startup timeout not a number", lambda h: [*DB, "create", "--startup-timeout", "10m"],
     Exit.USAGE, "--startup-timeout: expected a number of seconds, got 10m"),
    ("lanes zero", lambda h: [*DB, "create", "--lanes", "0"],
     Exit.USAGE, "--lanes: must be within 1 … 200, got 0"),
    ("a rule named by its flag",
     lambda h: [*DB, "create", "--repo", "/srv/a.git", "--branch", "m", "--restart-redis"],
     Exit.REFUSED, "agent-update: --restart-redis: restarting Redis requires"),
    ("password variable unset", lambda h: [*DB, *ADD, "--agent-password-env", "AU_TEST_UNSET"],
     Exit.USAGE, "--agent-password-env: the variable AU_TEST_UNSET is not set"),
    ("password variable empty", lambda h: [*DB, *ADD, "--agent-password-env", "AU_TEST_EMPTY"],
     Exit.USAGE, "--agent-password-env: the variable AU_TEST_EMPTY is empty"),
    ("server port out of range", lambda h: [*DB, *ADD, "--ssh-port", "70000"],
     Exit.USAGE, "--ssh-port: must be within 1 … 65535, got 70000"),
    ("server url without scheme",
     lambda h: [*DB, "server-add", "w3", "--host", "h", "--agent-url", "h:1"],
     Exit.REFUSED, "--agent-url: agent URL"),
    ("server-add of an existing server",
     lambda h: [*DB, "server-add", "web1", "--host", "x", "--agent-url", "http://x"],
     Exit.REFUSED, "server web1 exists; change it with: agent-update server-set web1"),
    ("server-set of an unknown server", lambda h: [*DB, "server-set", "nope", "--opt-out"],
     Exit.NOT_FOUND, "no server named nope"),
    ("unknown update", lambda h: [*DB, "status", "AU-nope"],
     Exit.NOT_FOUND, "agent-update: no update named AU-nope"),
    ("run on a Draft update", lambda h: [*DB, "run", "AU-draft"],
     Exit.REFUSED, "AU-draft is Draft: run agent-update plan AU-draft first"),
    ("pause on a Draft update", lambda h: [*DB, "pause", "AU-draft"],
     Exit.REFUSED, "Pause needs a Running update, not Draft"),
    ("unknown command", lambda h: [*DB, "bogus"],
     Exit.USAGE, "agent-update: unknown command bogus (see agent-update --help)"),
    ("split into one batch", lambda h: [*DB, "split", "AU-draft", "1"],
     Exit.USAGE, "K: must be 2 or more, got 1"),
    ("waves not numbers",
     lambda h: [*DB, "create", "--repo", "/srv/a.git", "--branch", "m", "--waves", "1, lots"],
     Exit.REFUSED, "--waves: 'lots' is not a number"),
    ("failure percentage over 100", lambda h: [*DB, "create", "--failure-budget-percent", "150"],
     Exit.USAGE, "--failure-budget-percent: must be a percentage within 0 … 100, got 150"),
    ("deadline not a time",
     lambda h: [*DB, "create", "--repo", "/srv/a.git", "--branch", "m", "--deadline", "soon"],
     Exit.REFUSED, "--deadline: soon is not a time like 2026-11-28T18:00"),
    ("verdict window too short",
     lambda h: [*DB, "create", "--repo", "/srv/a.git", "--branch", "m", "--verdict-window", "1"],
     Exit.REFUSED, "--verdict-window:"),
    ("min healthy time negative", lambda h: [*DB, "create", "--min-healthy-time", "-1"],
     Exit.USAGE, "--min-healthy-time: must be 0 seconds or more, got -1"),
    ("min healthy time past the startup timeout",
     lambda h: [*DB, "create", "--repo", "/srv/a.git", "--branch", "m",
                "--startup-timeout", "20", "--min-healthy-time", "30"],
     Exit.REFUSED, "--min-healthy-time: must not be longer than the agent startup timeout"),
    ("abort of a Draft update", lambda h: [*DB, "abort", "AU-draft"],
     Exit.REFUSED, "Abort needs a Pending, Running or Paused update, not Draft"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "code", "says"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_one_clear_line(home, capsys, monkeypatch, argv, code, says):
    monkeypatch.delenv("AU_TEST_UNSET", raising=False)
    monkeypatch.setenv("AU_TEST_EMPTY", "")
    args = argv(home)
    before = sorted(p.name for p in home.iterdir())
    got = call(*args)
    err = capsys.readouterr().err
    assert got == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert says.format(h=home) in lines[0], lines[0]
    assert lines[0].startswith("agent-update")
    assert not lines[0].rstrip().endswith(("'", '"')), lines[0]  # no quoted repr of a message
    assert sorted(p.name for p in home.iterdir()) == before  # nothing created on the way


def test_init_creates_the_database_and_only_init_does(home, capsys):
    assert call("--db", "fresh.db", "status", "AU-x") == Exit.USAGE
    assert not (home / "fresh.db").exists()
    assert call("--db", "fresh.db", "init") == Exit.OK
    assert call("--db", "fresh.db", "init") == Exit.OK  # idempotent
    assert call("--db", "fresh.db", "server-list") == Exit.OK
    assert "no servers yet" in capsys.readouterr().out


def test_server_flags_change_only_what_is_given(home, capsys, monkeypatch):
    monkeypatch.setenv("WEB2_PASSWORD", "s3cret")
    assert call(*DB, *ADD, "--type", "Database", "--opt-out", "--self-hosted",
                "--status", "archived", "--agent-password-env", "WEB2_PASSWORD") == 0  # fmt: skip
    assert call(*DB, "server-set", "web2", "--ssh-port", "2222") == 0
    capsys.readouterr()
    assert call(*DB, "server-list", "--json") == 0
    listed = {s["name"]: s for s in json.loads(capsys.readouterr().out)}
    web2 = listed["web2"]
    assert (web2["server_type"], web2["status"], web2["ssh_port"]) == ("Database", "Archived", 2222)
    assert web2["disable_agent_update"] is True and web2["self_hosted"] is True
    assert web2["agent_password"] is True  # set, never shown
    stored = SqliteStore(home / "au.db").get_server("web2")
    assert stored is not None and stored.agent_password == "s3cret"
    assert stored.opted_out

    assert call(*DB, "server-set", "web2", "--no-opt-out", "--status", "Active") == 0
    stored = SqliteStore(home / "au.db").get_server("web2")
    assert stored is not None and not stored.opted_out and stored.self_hosted
    assert stored.ssh_port == 2222 and stored.agent_password == "s3cret"
    capsys.readouterr()
    assert call(*DB, "servers") == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out and "self_hosted=yes" in out and "type=Database" in out


def test_every_help_reads_well(capsys):
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in ["", *commands]:
        assert call(*([name] if name else []), "--help") == 0
        text = capsys.readouterr().out
        assert text.startswith("usage: agent-update"), name
        assert "None" not in text, name
    assert call("create", "--help") == 0
    create = capsys.readouterr().out
    assert "timing (seconds)" in create and "--startup-timeout SECONDS" in create
    assert call("--help") == 0
    top = capsys.readouterr().out
    assert "exit codes:" in top and "130" in top


def test_a_plan_that_leaves_servers_unplanned_exits_3_and_says_why(home, capsys):
    store = SqliteStore(home / "au.db")
    update = Update(name="AU-stuck", repo="/srv/agent.git", branch="master", commit=COMMIT)
    store.insert_update(update, [Row(idx=1, server="web1"), Row(idx=2, server="gone")])
    store.close()
    assert call(*DB, "plan", "AU-stuck") == Exit.ENDED_BADLY
    captured = capsys.readouterr()
    assert "AU-stuck  Draft" in captured.out
    assert "gone: gone is not in the server registry" in captured.out
    assert "web1: " in captured.out  # its agent at 127.0.0.9:1 does not answer
    assert captured.err.strip() == "not planned: fix the servers above, then plan AU-stuck again"
