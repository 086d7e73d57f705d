"""GitSource against real local repositories (and a token-protected HTTP one)."""

from __future__ import annotations

import base64
import functools
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from git.cmd import Git

from agent_update.remote.git_source import GitSource, Resolved
from agent_update.rollout.errors import ValidationError

ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}
TOKEN = "tok-123-secret"


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, env=ENV, check=True, capture_output=True)
    return out.stdout.decode().strip()


class Upstream:
    """A bare repo plus a work tree that pushes to it."""

    def __init__(self, root: Path) -> None:
        self.bare, self.work = root / "upstream.git", root / "work"
        git(root, "init", "-q", "--bare", "-b", "master", str(self.bare))
        git(root, "init", "-q", "-b", "master", str(self.work))

    def commit(self, message: str) -> str:
        (self.work / "file.txt").write_text(message)
        git(self.work, "add", ".")
        git(self.work, "commit", "-q", "-m", message)
        return git(self.work, "rev-parse", "HEAD")

    def push(self, *refs: str, force: bool = False) -> None:
        git(self.work, "push", "-q", *(["--force"] if force else []), str(self.bare), *refs)
        git(self.bare, "update-server-info")  # for the dumb-HTTP test server


@pytest.fixture()
def repo(tmp_path: Path) -> tuple[Upstream, dict[str, str]]:
    up = Upstream(tmp_path)
    shas = {"c0": up.commit("c0"), "c1": up.commit("c1\n\nbody line")}
    git(up.work, "checkout", "-q", "-b", "side")
    shas["s1"] = up.commit("s1 side only")
    git(up.work, "checkout", "-q", "master")
    shas["c2"] = up.commit("c2 head")
    up.push("master", "side")
    return up, shas


@pytest.fixture()
def source(tmp_path: Path) -> GitSource:
    return GitSource(tmp_path / "cache", timeout=20)


def test_branch_head_and_resolve_empty_commit(repo, source: GitSource) -> None:
    up, shas = repo
    url = str(up.bare)
    assert source.branch_head(url, "master") == shas["c2"]
    assert source.branch_head(f"file://{up.bare}", "side") == shas["s1"]
    assert source.resolve(url, "master", None) == Resolved(shas["c2"], "c2 head")
    assert source.resolve(url, "master", "  ") == Resolved(shas["c2"], "c2 head")


def test_resolve_given_commit(repo, source: GitSource) -> None:
    up, shas = repo
    url = str(up.bare)
    assert source.resolve(url, "master", shas["c1"].upper()) == Resolved(
        shas["c1"], "c1\n\nbody line"
    )
    with pytest.raises(ValidationError) as info:
        source.resolve(url, "master", shas["s1"])
    assert info.value.field == "commit"
    assert "is not on branch 'master'" in info.value.message
    with pytest.raises(ValidationError) as info:
        source.resolve(url, "master", "f" * 40)
    assert info.value.field == "commit" and "does not exist" in info.value.message
    assert source.commit_message(url, shas["s1"], "side") == "s1 side only"


def test_reachability_and_existence(repo, source: GitSource) -> None:
    up, shas = repo
    url = str(up.bare)
    assert source.is_reachable(url, "master", shas["c0"])
    assert source.is_reachable(url, "master", shas["c2"])
    assert not source.is_reachable(url, "master", shas["s1"])
    assert source.is_reachable(url, "side", shas["s1"])
    assert not source.is_reachable(url, "master", "a" * 40)
    assert source.commit_exists(url, shas["s1"])
    assert not source.commit_exists(url, "a" * 40)


def test_new_pushes_and_force_pushes_are_seen(repo, source: GitSource) -> None:
    up, shas = repo
    url = str(up.bare)
    source.resolve(url, "master", None)  # warm the mirror
    c3 = up.commit("c3 new")
    up.push("master")
    assert source.resolve(url, "master", None) == Resolved(c3, "c3 new")
    git(up.work, "reset", "-q", "--hard", shas["c1"])
    up.push("master", force=True)
    git(up.bare, "gc", "-q", "--prune=now")
    assert not source.is_reachable(url, "master", c3)
    assert source.commit_exists(url, shas["c2"]) is False  # gone upstream, cached here
    assert source.resolve(url, "master", None).commit == shas["c1"]


def test_unknown_branch_and_unreachable_repo(repo, source: GitSource, tmp_path: Path) -> None:
    up, _ = repo
    with pytest.raises(ValidationError) as info:
        source.branch_head(str(up.bare), "nope")
    assert info.value.field == "branch" and "'nope' not found" in info.value.message
    with pytest.raises(ValidationError) as info:
        source.resolve(str(tmp_path / "missing.git"), "master", None)
    assert info.value.field == "repo"
    assert "does not appear to be a git repository" in info.value.message


def test_inputs_validated_before_git_runs(source: GitSource, monkeypatch) -> None:
    calls: list[object] = []
    monkeypatch.setattr(Git, "execute", lambda *a, **k: calls.append(a))
    for args, field in [
        (("--upload-pack=touch /tmp/x", "master", None), "repo"),
        (("/srv/x.git", "-b", None), "branch"),
        (("/srv/x.git", "master", "HEAD~1"), "commit"),
    ]:
        with pytest.raises(ValidationError) as info:
            source.resolve(*args)
        assert info.value.field == field
    assert calls == []


def test_concurrent_callers_share_one_mirror(repo, source: GitSource) -> None:
    up, shas = repo
    url = str(up.bare)
    picks = [(None, shas["c2"]), (shas["c0"], shas["c0"]), (shas["c1"], shas["c1"])] * 6
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda p: source.resolve(url, "master", p[0]).commit, picks))
    assert results == [want for _, want in picks]
    assert [p.name for p in source.cache_dir.iterdir() if p.suffix == ".git"] == [
        source.mirror_path(url).name
    ]


# -- a private https-like host: dumb HTTP with Basic auth -------------------


class AuthHandler(SimpleHTTPRequestHandler):
    seen: list[list[str]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        headers = self.headers.get_all("Authorization") or []
        AuthHandler.seen.append(headers)
        expected = "Basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
        if headers != [expected]:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()


@pytest.fixture()
def http_repo(repo) -> Iterator[tuple[str, dict[str, str]]]:
    up, shas = repo
    handler = functools.partial(AuthHandler, directory=str(up.bare.parent))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/upstream.git", shas
    server.shutdown()
    server.server_close()


def test_token_sent_as_header_never_in_argv_or_config(http_repo, tmp_path: Path, monkeypatch):
    url, shas = http_repo
    argv: list[str] = []
    real = Git.execute

    def spy(self, command, *args, **kwargs):
        argv.extend(map(str, command))
        return real(self, command, *args, **kwargs)

    monkeypatch.setattr(Git, "execute", spy)
    source = GitSource(tmp_path / "cache", token=TOKEN, timeout=20)
    assert source.resolve(url, "master", shas["c1"]) == Resolved(shas["c1"], "c1\n\nbody line")
    assert all(len(h) == 1 for h in AuthHandler.seen)  # one header, not duplicated
    assert TOKEN not in " ".join(argv)
    for path in source.cache_dir.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    assert (
        base64.b64encode(TOKEN.encode())[:8]
        not in (source.mirror_path(url) / "config").read_bytes()
    )


def test_without_token_fails_fast_and_clearly(http_repo, tmp_path: Path) -> None:
    url, _ = http_repo
    started = time.monotonic()
    with pytest.raises(ValidationError) as info:
        GitSource(tmp_path / "cache2", timeout=20).branch_head(url, "master")
    assert time.monotonic() - started < 5  # no password prompt hanging
    assert info.value.field == "repo" and url in info.value.message


def test_hanging_host_times_out(tmp_path: Path) -> None:
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/x.git"
        started = time.monotonic()
        with pytest.raises(ValidationError) as info:
            GitSource(tmp_path / "cache", timeout=1).branch_head(url, "master")
    assert time.monotonic() - started < 4
    assert "timed out after 1s" in info.value.message
