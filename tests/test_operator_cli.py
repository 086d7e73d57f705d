"""The operator's day at the command line, without a fleet: bad values refused
naming the flag or key, registry names and IPv6 hosts, list and delete, and
the overlap warning that never names a Draft.

In-process through ``cli.run``; a small local git repository stands in for
the agent's upstream where a command resolves a branch.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time

import pytest

from agent_update import cli
from agent_update.cli.exits import Exit
from agent_update.rollout.model import Row, RowStatus, Server, Update, UpdateStatus
from agent_update.rollout.store import SqliteStore


def call(*argv: str) -> int:
    try:
        return cli.run(list(argv))
    except SystemExit as exc:  # argparse's own exits
        return int(exc.code or 0)


@pytest.fixture
def repo(tmp_path):
    path = tmp_path / "agent.git"
    path.mkdir()
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q", "-b", "master"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "one"], check=True)
    return str(path)


@pytest.fixture
def home(tmp_path, monkeypatch, repo):
    """A database with two registered servers, settings naming the repository."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AGENT_UPDATE_DB", str(tmp_path / "au.db"))
    settings = tmp_path / "settings.json"
    settings.write_text(
        json.dumps(
            {"default_repo": repo, "default_branch": "master", "git_cache_dir": str(tmp_path / "g")}
        )
    )
    monkeypatch.setenv("AGENT_UPDATE_SETTINGS", str(settings))
    store = SqliteStore(tmp_path / "au.db")
    for name, host in (("web1", "127.0.0.9"), ("web2", "127.0.0.10")):
        store.save_server(Server(name=name, host=host, agent_url=f"http://{host}:1"))
    store.close()
    return tmp_path


def store(home) -> SqliteStore:
    return SqliteStore(home / "au.db")


BAD_CREATE = [
    (
        ["--waves", "99999999999999999999999"],
        Exit.REFUSED,
        "--waves: 99999999999999999999999: a wave holds at most",
    ),
    (["--waves", "5, 1"], Exit.REFUSED, "--waves: waves ramp up: 1 after 5"),
    (["--waves", "٣"], Exit.REFUSED, "--waves: '٣' is not a number"),
    (["--lanes", "٣"], Exit.USAGE, "--lanes: expected a whole number, got ٣"),
    (["--wave-success-threshold", "nan"], Exit.USAGE, "expected a number of percent, got nan"),
    (["--bake-time", "inf"], Exit.USAGE, "expected a number of seconds, got inf"),
    (
        ["--server-type", "Nonexistent"],
        Exit.REFUSED,
        "--server-type: no server of type 'Nonexistent'",
    ),
    (["--deadline", "2020-01-01T00:00"], Exit.REFUSED, "--deadline: 2020-01-01 00:00:00"),
]


@pytest.mark.parametrize(("extra", "code", "message"), BAD_CREATE)
def test_create_refuses_bad_values_naming_the_flag(home, capsys, extra, code, message):
    assert call("create", *extra) == code
    err = capsys.readouterr().err
    assert message in err, err
    assert store(home).list_updates() == []  # nothing half-made


@pytest.mark.parametrize(
    ("key", "raw", "message"),
    [
        ("poll_interval", "NaN", "poll_interval: must be a finite number"),
        ("probe_timeout", "Infinity", "probe_timeout: must be a finite number"),
        ("plan_concurrency", "1000000000000", "plan_concurrency: must be within 1 … 1024"),
        ("lease_ttl", "0.001", "lease_ttl: must be within 1 … 86400"),
    ],
)
def test_settings_numbers_are_finite_and_in_range(home, capsys, key, raw, message):
    path = home / "bad.json"
    path.write_text(f'{{"{key}": {raw}}}')
    assert call("--settings", str(path), "server-list") == Exit.USAGE
    assert message in capsys.readouterr().err


def test_a_near_duplicate_name_is_refused_and_the_entry_kept(home, capsys):
    before = store(home).get_server("web1")
    for name in (" web1 ", "WEB1", "web1"):
        code = call("server-add", name, "--host", "10.1.1.1", "--agent-url", "http://10.1.1.1/a")
        assert code == Exit.REFUSED, name
        assert "server web1 exists" in capsys.readouterr().err
    assert store(home).get_server("web1") == before  # not overwritten with defaults
    assert [s.name for s in store(home).list_servers()] == ["web1", "web2"]
    assert call("server-set", " Web1 ", "--ssh-port", "2222") == Exit.OK
    assert store(home).get_server("web1").ssh_port == 2222


@pytest.mark.parametrize("given", ["::1", "[::1]", "0:0:0:0:0:0:0:1"])
def test_ipv6_hosts_are_stored_bare_and_reach_the_url(home, given):
    url = "http://[::1]:8000/agent"
    assert call("server-add", "v6", "--host", given, "--agent-url", url) == Exit.OK
    server = store(home).get_server("v6")
    assert server.host == "::1" and server.agent_url == url
    from agent_update.remote.ssh import SshTarget

    assert SshTarget(server.host, 2222).known_hosts_name == "[::1]:2222"


def test_list_newest_first_with_filters_and_json(home, capsys):
    s = store(home)
    for i, status in enumerate([UpdateStatus.SUCCESS, UpdateStatus.DRAFT, UpdateStatus.FAILURE]):
        s.insert_update(Update(name=f"AU-{i}", status=status, commit="a" * 40), [Row(1, "web1")])
    assert call("list") == Exit.OK
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["AU-2", "AU-1", "AU-0"]
    assert call("list", "--status", "draft", "--status", "FAILURE", "--json") == Exit.OK
    data = json.loads(capsys.readouterr().out)
    assert [(d["name"], d["status"], d["servers"]) for d in data] == [
        ("AU-2", "Failure", 1),
        ("AU-1", "Draft", 1),
    ]
    assert call("list", "--status", "nonsense") == Exit.USAGE


def test_delete_never_an_update_in_flight(home, capsys):
    s = store(home)
    s.insert_update(Update(name="AU-d", status=UpdateStatus.DRAFT), [Row(1, "web1")])
    s.insert_update(Update(name="AU-r", status=UpdateStatus.RUNNING), [Row(1, "web1")])
    s.insert_update(Update(name="AU-p", status=UpdateStatus.PAUSED), [Row(1, "web2")])
    s.insert_update(Update(name="AU-s", status=UpdateStatus.SUCCESS), [Row(1, "web2")])
    assert call("delete", "AU-d") == Exit.OK
    assert call("status", "AU-d") == Exit.NOT_FOUND
    for name in ("AU-r", "AU-p"):
        assert call("delete", name) == Exit.REFUSED
        assert "only a Draft, Pending or finished update" in capsys.readouterr().err
    assert call("delete", "AU-s") == Exit.REFUSED
    assert "--finished" in capsys.readouterr().err
    assert call("delete", "AU-s", "--finished") == Exit.OK
    assert sorted(u.name for u in s.list_updates()) == ["AU-p", "AU-r"]
    assert [r.server for r in s.get_rows("AU-r")] == ["web1"]  # untouched
    assert s.get_rows("AU-s") == []


def test_a_draft_is_never_named_as_overlapping(home):
    s = store(home)
    s.insert_update(Update(name="AU-draft"), [Row(1, "web1")])
    s.insert_update(Update(name="AU-old", status=UpdateStatus.SUCCESS), [Row(1, "web1")])
    s.insert_update(
        Update(name="AU-now", status=UpdateStatus.PENDING),
        [Row(1, "web1", status=RowStatus.PENDING)],
    )
    s.insert_update(
        Update(name="AU-mine", status=UpdateStatus.PENDING),
        [Row(1, "web1", status=RowStatus.PENDING)],
    )
    assert [o[0] for o in s.overlaps("AU-mine")] == ["AU-now"]


def test_status_watch_follows_a_paused_update_until_it_ends(home, tmp_path):
    s = store(home)
    s.insert_update(
        Update(name="AU-w", status=UpdateStatus.PAUSED), [Row(1, "web1", status=RowStatus.PENDING)]
    )
    import sys

    watcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent_update.cli",
            "status",
            "AU-w",
            "--watch",
            "--interval",
            "0.2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    assert watcher.poll() is None  # a Paused update is followed, not left at once
    s.save_update(s.get_update("AU-w").copy(status=UpdateStatus.ABORTED), ["status"])
    out, err = watcher.communicate(timeout=30)
    assert watcher.returncode == Exit.STOPPED_SHORT, (out, err)
    assert "Aborted" in out


def test_a_read_only_database_is_one_line(monkeypatch, home, capsys):
    def refuse(*args, **kwargs):
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(SqliteStore, "save_server", refuse)
    assert (
        call("server-add", "web3", "--host", "10.0.0.3", "--agent-url", "http://10.0.0.3/a")
        == Exit.FAILED
    )
    err = capsys.readouterr().err
    assert "is read-only" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
