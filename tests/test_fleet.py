"""The loopback fleet behaves like the real agent where an orchestrator can tell.

Every update here is the default command of docs/design.md §3, unmodified, run with
the OpenSSH client against the host's own sshd.
"""

from __future__ import annotations

import os
import pwd
import shlex
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from agent_update.testing import Fleet, FleetError, FleetHost, pipstub, procs, users
from agent_update.testing.harness import wait_for
from agent_update.testing.model import MASTER_MARKERS

pytestmark = pytest.mark.fleet


def flag(value: bool) -> str:
    return "true" if value else "false"


def update_command(
    host: FleetHost,
    repo_url: str,
    commit: str,
    web: bool = True,
    rq: bool = False,
    redis: bool = False,
) -> str:
    q = shlex.quote
    return "\n".join(
        [
            "set -e",
            f"cd {q(host.agent_dir + '/repo')}",
            f"git remote set-url upstream {q(repo_url)}",
            "git fetch upstream",
            f"git checkout --force {q(commit)}; git reset --hard {q(commit)}; git clean -fd",
            f"cd {q(host.agent_dir)}",
            "./env/bin/pip install -r ./repo/requirements.txt",
            "./env/bin/pip install -e ./repo",
            "./env/bin/agent setup database",
            "./env/bin/agent run-patches",
            f"./env/bin/agent update --restart-web-workers={flag(web)}"
            f" --restart-rq-workers={flag(rq)} --restart-redis={flag(redis)}"
            " --skip-repo-setup=true --skip-patches=true",
            "sudo -n supervisorctl start agent:",
        ]
    )


def pids(fleet: Fleet, host: FleetHost) -> dict[str, int | None]:
    return {name: pid for name, (_, pid) in fleet.program_states(host).items()}


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    with Fleet(2) as started:
        print(f"\nfleet of 2 started in {started.timings['start']:.2f} s")
        yield started
    print(f"\nfleet of 2 stopped in {started.timings['stop']:.2f} s")


@pytest.fixture
def clean(fleet: Fleet) -> Fleet:
    """Every test starts from every host on base, healthy."""
    fleet.reset()
    return fleet


def update(fleet: Fleet, host: FleetHost, commit: str, **flags: bool):
    began = time.monotonic()
    done = fleet.ssh(host, update_command(host, fleet.upstream_url, commit, **flags), timeout=40)
    return done, time.monotonic() - began


def test_hosts_answer_with_auth_only(clean: Fleet) -> None:
    fleet = clean
    assert [h.address for h in fleet.hosts] == ["127.0.0.2", "127.0.0.3"]
    for host in fleet.hosts:
        auth = {"Authorization": f"bearer {host.agent_password}"}
        ping = requests.get(f"{host.agent_url}/ping", headers=auth, timeout=5)
        assert ping.status_code == 200 and ping.json() == {"message": "pong"}
        for path in ("/ping", "/version"):
            assert requests.get(host.agent_url + path, timeout=5).status_code == 401
            wrong = {"Authorization": "bearer nope"}
            assert requests.get(host.agent_url + path, headers=wrong, timeout=5).status_code == 401
        version = fleet.version(host)
        assert version["services"] == {
            "web": "RUNNING",
            "redis": "RUNNING",
            "worker": {"0": "RUNNING"},
        }
        assert fleet.reported_commit(host) == fleet.commits.base
        assert fleet.running_commit(host) == fleet.commits.base
        states = fleet.program_states(host)
        assert set(states) == {"agent:web", "agent:worker-0", "agent:redis"}
        assert all(state == "RUNNING" and pid for state, pid in states.values())
        assert f"[{host.address}]:{host.ssh_port} ssh-ed25519 AAAA" in fleet.known_hosts
    assert fleet.host("127.0.0.3") is fleet.host("host3")
    with pytest.raises(FleetError):
        fleet.host("127.0.0.9")


def test_paramiko_connects_with_the_fleet_keys_only(fleet: Fleet) -> None:
    import paramiko

    host = fleet.hosts[1]
    client = paramiko.SSHClient()
    client.load_host_keys(str(fleet.known_hosts_path))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        host.address,
        port=host.ssh_port,
        username=host.ssh_user,
        pkey=paramiko.Ed25519Key.from_private_key_file(str(fleet.client_key_path)),
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    try:
        _, stdout, _ = client.exec_command("command -v supervisorctl; echo $HOME")
        assert stdout.read().decode().split() == [
            str(Path(host.agent_dir).parent / "bin" / "supervisorctl"),
            str(Path(host.agent_dir).parent / "home"),
        ]
        assert stdout.channel.recv_exit_status() == 0
    finally:
        client.close()


def test_upstream_commits(fleet: Fleet) -> None:
    shas = vars(fleet.commits)
    assert len(set(shas.values())) == len(shas)
    assert all(len(sha) == 40 and int(sha, 16) >= 0 for sha in shas.values())
    bare = fleet.upstream_url
    order = subprocess.run(
        ["git", "-C", bare, "rev-list", "--reverse", fleet.branch],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert order == [shas[marker] for marker in MASTER_MARKERS]

    def on_master(sha: str) -> bool:
        args = ["git", "-C", bare, "merge-base", "--is-ancestor", sha, fleet.branch]
        return subprocess.run(args, check=False).returncode == 0

    assert on_master(fleet.commits.liar) and not on_master(fleet.commits.side)


def test_update_to_good_restarts_web_only(clean: Fleet) -> None:
    fleet, host = clean, clean.hosts[0]
    before = pids(fleet, host)
    done, took = update(fleet, host, fleet.commits.good)
    print(f"\nupdate round trip (good, over ssh): {took:.2f} s")
    assert done.returncode == 0, done.stderr
    assert fleet.reported_commit(host) == fleet.commits.good
    assert fleet.running_commit(host) == fleet.commits.good
    after = pids(fleet, host)
    assert after["agent:web"] != before["agent:web"]
    assert after["agent:worker-0"] == before["agent:worker-0"]
    assert after["agent:redis"] == before["agent:redis"]
    # The other host is untouched.
    assert fleet.running_commit(fleet.hosts[1]) == fleet.commits.base


def test_supervisorctl_over_ssh_is_the_hosts_own(clean: Fleet) -> None:
    fleet, host = clean, clean.hosts[1]
    done = fleet.ssh(host, "sudo -n supervisorctl status")
    assert done.returncode == 0, done.stderr
    web_pid = fleet.program_states(host)["agent:web"][1]
    assert f"pid {web_pid}," in next(
        line for line in done.stdout.splitlines() if line.startswith("agent:web ")
    )


@pytest.mark.skipif(not users.production_like(), reason="only root makes users (one line)")
def test_the_agent_user_needs_sudo_for_the_root_only_socket(clean: Fleet) -> None:
    """As on a standard server: plain supervisorctl is refused, the agent runs as its user."""
    fleet, host = clean, clean.hosts[1]
    assert host.ssh_user == host.agent_user != "root"
    plain = fleet.ssh(host, "id -un; supervisorctl status")
    assert plain.stdout.splitlines()[0] == host.agent_user
    assert "Permission denied" in plain.stdout + plain.stderr
    assert "agent:web" not in plain.stdout
    socket = Path(host.agent_dir).parent / "s.sock"
    assert stat.S_IMODE(socket.stat().st_mode) == 0o700 and socket.stat().st_uid == 0
    web_pid = fleet.program_states(host)["agent:web"][1]
    assert Path(f"/proc/{web_pid}").stat().st_uid == pwd.getpwnam(host.agent_user).pw_uid


def test_crash_leaves_web_not_running(clean: Fleet) -> None:
    fleet, host = clean, clean.hosts[0]
    done, _ = update(fleet, host, fleet.commits.crash)
    # The exit code is whatever supervisorctl felt like: only the state counts.
    wait_for(
        lambda: fleet.program_states(host)["agent:web"][0] in ("BACKOFF", "FATAL"),
        timeout=30,
        what="web in BACKOFF/FATAL",
    )
    assert fleet.program_states(host)["agent:web"][0] != "RUNNING", done.stdout
    with pytest.raises(FleetError):
        fleet.running_commit(host)


def test_install_fail_stops_before_restarting(clean: Fleet) -> None:
    fleet, host = clean, clean.hosts[1]
    before = pids(fleet, host)
    done, _ = update(fleet, host, fleet.commits.install_fail)
    assert done.returncode != 0
    assert "ERROR: No matching distribution found for" in done.stderr
    assert pids(fleet, host) == before
    # Checked out already, so the agent reports it, yet the old code runs.
    assert fleet.reported_commit(host) == fleet.commits.install_fail
    assert fleet.running_commit(host) == fleet.commits.base


def test_update_is_a_silent_noop_when_a_worker_is_down(clean: Fleet) -> None:
    fleet, host = clean, clean.hosts[0]
    fleet.stop_program(host, "agent:worker-0")
    before = pids(fleet, host)
    assert before["agent:worker-0"] is None
    plain = fleet.ssh(
        host,
        f"cd {shlex.quote(host.agent_dir)} && ./env/bin/agent update --restart-web-workers=true"
        " --restart-rq-workers=true --restart-redis=true --skip-repo-setup=true"
        " --skip-patches=true",
    )
    assert plain.returncode == 0, plain.stderr
    assert pids(fleet, host) == before
    done, _ = update(fleet, host, fleet.commits.good)
    assert done.returncode == 0, done.stderr
    after = pids(fleet, host)
    assert after["agent:web"] == before["agent:web"]
    assert after["agent:redis"] == before["agent:redis"]
    assert after["agent:worker-0"] is not None  # the final `supervisorctl start agent:`
    assert fleet.reported_commit(host) == fleet.commits.good
    assert fleet.running_commit(host) == fleet.commits.base  # nothing restarted


def test_liar_exits_1_yet_runs_the_new_commit(clean: Fleet) -> None:
    fleet, host = clean, clean.hosts[1]
    before = pids(fleet, host)
    done, _ = update(fleet, host, fleet.commits.liar)
    assert done.returncode == 1
    fleet.wait_healthy(host, timeout=5)
    assert fleet.running_commit(host) == fleet.commits.liar
    assert pids(fleet, host)["agent:web"] != before["agent:web"]


def test_unhealthy_shows_a_worker_down_in_version(clean: Fleet) -> None:
    fleet, host = clean, clean.hosts[0]
    update(fleet, host, fleet.commits.unhealthy, rq=True)
    wait_for(
        lambda: fleet.version(host)["services"]["worker"]["0"] != "RUNNING",
        timeout=30,
        what="worker not RUNNING in /version",
    )
    assert fleet.version(host)["services"]["web"] == "RUNNING"
    assert fleet.running_commit(host) == fleet.commits.unhealthy


def test_slow_answers_within_seconds(clean: Fleet) -> None:
    fleet, host = clean, clean.hosts[1]
    done, _ = update(fleet, host, fleet.commits.slow)
    assert done.returncode == 0, done.stderr
    began = time.monotonic()
    fleet.wait_healthy(host, timeout=10)
    assert fleet.running_commit(host) == fleet.commits.slow
    print(f"\nslow commit answered {time.monotonic() - began:.2f} s after the command")


def test_set_commit_and_workers(clean: Fleet) -> None:
    fleet, host = clean, clean.hosts[0]
    fleet.set_commit(host, fleet.commits.good2)
    assert fleet.running_commit(host) == fleet.reported_commit(host) == fleet.commits.good2
    fleet.set_commit(host, fleet.commits.side)
    assert fleet.version(host)["started_marker"] == "side"


def test_pip_stand_in(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# comment\nrequests>=2\n")
    assert pipstub.main(["install", "-r", str(requirements)]) == 0
    requirements.write_text("requests\nno-such-package-here==1.0\n")
    assert pipstub.main(["install", "-r", str(requirements)]) == 1
    assert "No matching distribution found for no-such-package-here==1.0" in capsys.readouterr().err
    assert pipstub.main(["install", "-e", str(tmp_path)]) == 1
    (tmp_path / "setup.py").write_text("")
    assert pipstub.main(["install", "-e", str(tmp_path)]) == 0


def test_stop_leaves_no_process_alive() -> None:
    fleet = Fleet(1, workers=2).start()
    host = fleet.hosts[0]
    assert {"agent:worker-0", "agent:worker-1"} <= set(fleet.program_states(host))
    # An SSH connection still open at stop time must not survive it either.
    lingering = subprocess.Popen(
        fleet.ssh_argv(host, "sleep 60"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(
            lambda: any(cmdline(pid) == "sleep 60" for pid in fleet.pids()),
            timeout=30,
            what="the ssh connection",
        )
        started = fleet.pids()
        root = fleet.root
        fleet.stop()
        fleet.stop()  # idempotent
        print(f"\nfleet of 1 stopped in {fleet.timings['stop']:.2f} s")
        assert [pid for pid in started if procs.is_alive(pid)] == []
        assert not root.exists()
        if users.production_like():  # the agent user and its sudo rights are gone too
            with pytest.raises(KeyError):
                pwd.getpwnam(host.agent_user)
            assert not (users.SUDOERS_DIR / f"agent-update-fleet-{host.agent_user}").exists()
    finally:
        lingering.kill()
        lingering.wait()


def test_start_failure_names_the_host_and_stops_everything(tmp_path: Path) -> None:
    fleet = Fleet(1, root=tmp_path, start_timeout=0.01)
    with pytest.raises(FleetError, match=r"host2: .*logs: .*sshd\.log"):
        fleet.start()
    if users.production_like():
        with pytest.raises(KeyError):  # no user left behind either
            pwd.getpwnam(fleet.hosts[0].agent_user)
    assert fleet.pids() == set()
    leftovers = [
        pid
        for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
        if str(tmp_path) in cmdline(pid) and procs.is_alive(pid)
    ]
    assert leftovers == []
