"""Resolving the rollout's source with plain git: any host, no GitHub API.

``git ls-remote`` answers "what is the branch head"; a cached bare mirror
per repository answers "does this commit exist, is it on the branch, what
is its message". A token for private https hosts travels as an HTTP header
in git's environment: never in a URL, a remote config, argv or a log line.
Every value is validated with refs.py before git sees it, and refs are
separate argv items (no shell anywhere).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from git.cmd import Git

from agent_update.rollout.errors import ValidationError
from agent_update.rollout.refs import validate_branch, validate_commit, validate_repo_url

MIRROR_REF = "refs/remotes/mirror"
_STDERR_TAIL = 400


@dataclass(frozen=True)
class Resolved:
    commit: str
    message: str


class _GitFailed(Exception):
    def __init__(self, status: int, stderr: str, timed_out: bool) -> None:
        super().__init__(stderr)
        self.status = status
        self.stderr = stderr
        self.timed_out = timed_out

    def tail(self) -> str:
        text = " ".join(self.stderr.split())
        return text[-_STDERR_TAIL:] or f"git exited with status {self.status}"


class GitSource:
    """Answers questions about a repository's branches and commits.

    Safe for concurrent callers, threads or processes: each mirror is only
    touched under an exclusive ``flock`` on its lock file.
    """

    def __init__(
        self,
        cache_dir: Path,
        token: str | None = None,
        timeout: float = 60,
        token_user: str = "x-access-token",  # noqa: S107 (a user name, not a secret)
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.timeout = timeout
        self._env = _git_env(token, token_user)

    # -- public API -------------------------------------------------------

    def branch_head(self, repo: str, branch: str) -> str:
        """The commit the branch points at upstream, via ``git ls-remote``."""
        repo = validate_repo_url(repo)
        branch = validate_branch(branch)
        ref = f"refs/heads/{branch}"
        out = self._checked(["ls-remote", "--", repo, ref], None, repo, "read")
        for line in out.splitlines():
            sha, _, name = line.partition("\t")
            if name.strip() == ref:
                return validate_commit(sha, "commit")
        raise ValidationError("branch", f"branch {branch!r} not found in {repo!r}")

    def commit_message(self, repo: str, commit: str, branch: str) -> str:
        """The full message of ``commit``, fetching ``branch`` if not cached."""
        repo, branch, commit = self._validate(repo, branch, commit)
        with self._mirror(repo) as mirror:
            if not self._has_commit(mirror, commit):
                self._fetch(mirror, repo, [self._branch_refspec(branch)])
            if not self._has_commit(mirror, commit):
                raise ValidationError("commit", f"commit {commit} does not exist in {repo!r}")
            return self._message(mirror, repo, commit)

    def commit_exists(self, repo: str, commit: str) -> bool:
        """Whether ``commit`` is reachable from some branch or tag upstream."""
        repo = validate_repo_url(repo)
        commit = validate_commit(commit)
        with self._mirror(repo) as mirror:
            return self._exists(mirror, repo, commit)

    def is_reachable(self, repo: str, branch: str, commit: str) -> bool:
        """Whether ``commit`` exists and is an ancestor of (or is) the branch head."""
        repo, branch, commit = self._validate(repo, branch, commit)
        head = self.branch_head(repo, branch)
        with self._mirror(repo) as mirror:
            self._sync_branch(mirror, repo, branch, head)
            return self._has_commit(mirror, commit) and self._is_ancestor(mirror, commit, head)

    def resolve(self, repo: str, branch: str, commit: str | None) -> Resolved:
        """The commit to roll out and its message (docs/design.md §2, Source).

        Empty commit: the branch head. Given commit: it must exist upstream
        and be on the branch, else ValidationError("commit", …).
        """
        repo = validate_repo_url(repo)
        branch = validate_branch(branch)
        wanted = validate_commit(commit) if commit and commit.strip() else None
        head = self.branch_head(repo, branch)
        target = wanted or head
        with self._mirror(repo) as mirror:
            self._sync_branch(mirror, repo, branch, head)
            if wanted and not self._is_ancestor_safe(mirror, wanted, head):
                if not self._exists(mirror, repo, wanted):
                    raise ValidationError("commit", f"commit {wanted} does not exist in {repo!r}")
                raise ValidationError(
                    "commit",
                    f"commit {wanted} is not on branch {branch!r} of {repo!r} "
                    f"(head is {head[:12]})",
                )
            return Resolved(commit=target, message=self._message(mirror, repo, target))

    # -- mirror -----------------------------------------------------------

    def mirror_path(self, repo: str) -> Path:
        digest = hashlib.sha256(validate_repo_url(repo).encode()).hexdigest()[:24]
        return self.cache_dir / f"{digest}.git"

    @contextlib.contextmanager
    def _mirror(self, repo: str) -> Iterator[Path]:
        path = self.mirror_path(repo)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        lock_path = path.with_name(path.name + ".lock")
        with open(lock_path, "a+b") as lock:
            deadline = time.monotonic() + self.timeout
            while True:
                try:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise ValidationError(
                            "repo", f"git cache for {repo!r} stayed busy for {self.timeout}s"
                        ) from None
                    time.sleep(0.05)
            try:
                if not (path / "HEAD").exists():
                    self._checked(["init", "--bare", "--quiet", str(path)], None, repo, "cache")
                yield path
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _branch_refspec(self, branch: str) -> str:
        return f"+refs/heads/{branch}:{MIRROR_REF}/{branch}"

    def _sync_branch(self, mirror: Path, repo: str, branch: str, head: str) -> None:
        """Fetch ``branch`` unless the mirror already has its current head."""
        if self._has_commit(mirror, head):
            current = self._run(
                ["rev-parse", "--verify", "--quiet", f"{MIRROR_REF}/{branch}"], mirror
            )
            if current.strip() == head:
                return
        self._fetch(mirror, repo, [self._branch_refspec(branch)])

    def _exists(self, mirror: Path, repo: str, commit: str) -> bool:
        """Fetch all branches and tags, then look for a ref containing ``commit``.

        Fetching first means a commit removed upstream by a force push is
        not reported as existing just because the cache still holds it.
        """
        self._fetch(
            mirror,
            repo,
            [f"+refs/heads/*:{MIRROR_REF}/*", "+refs/tags/*:refs/tags/*"],
            prune=True,
        )
        if not self._has_commit(mirror, commit):
            return False
        out = self._run(
            ["for-each-ref", "--count=1", "--contains", commit, MIRROR_REF, "refs/tags"], mirror
        )
        return bool(out.strip())

    def _fetch(self, mirror: Path, repo: str, refspecs: list[str], prune: bool = False) -> None:
        args = ["fetch", "--quiet", "--no-tags"]
        if prune:
            args.append("--prune")
        self._checked([*args, "--", repo, *refspecs], mirror, repo, "fetch from")

    def _has_commit(self, mirror: Path, commit: str) -> bool:
        return self._status(["cat-file", "-e", f"{commit}^{{commit}}"], mirror) == 0

    def _is_ancestor(self, mirror: Path, commit: str, head: str) -> bool:
        status = self._status(["merge-base", "--is-ancestor", commit, head], mirror)
        if status not in (0, 1):
            raise ValidationError("commit", f"cannot compare {commit} with {head}")
        return status == 0

    def _is_ancestor_safe(self, mirror: Path, commit: str, head: str) -> bool:
        return self._has_commit(mirror, commit) and self._is_ancestor(mirror, commit, head)

    def _message(self, mirror: Path, repo: str, commit: str) -> str:
        return self._checked(
            ["show", "--no-patch", "--format=%B", commit], mirror, repo, "read"
        ).strip()

    def _validate(self, repo: str, branch: str, commit: str) -> tuple[str, str, str]:
        return validate_repo_url(repo), validate_branch(branch), validate_commit(commit)

    # -- running git ------------------------------------------------------

    def _execute(self, args: list[str], cwd: Path | None) -> tuple[int, str, str]:
        """Run git with argv ``args``; never raises for a non-zero status.

        git runs in its own process group so a timeout kills its helpers too
        (git-remote-http, ssh): GitPython's own timeout kills only direct
        children, and an orphaned helper holding the pipes hangs the read.
        A timed-out run reports status -9 and stderr starting "Timeout:".
        """
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        prefix = ["git", f"--git-dir={cwd}"] if cwd else ["git"]
        handle = Git(str(self.cache_dir)).execute(
            [*prefix, *args], as_process=True, env=self._env, start_new_session=True
        )
        proc = handle.proc
        try:
            out, err = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return -9, "", f"Timeout: git {args[0]} did not finish in {self.timeout}s"
        return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    def _run(self, args: list[str], cwd: Path | None) -> str:
        return self._execute(args, cwd)[1]

    def _status(self, args: list[str], cwd: Path | None) -> int:
        return self._execute(args, cwd)[0]

    def _checked(self, args: list[str], cwd: Path | None, repo: str, verb: str) -> str:
        status, out, err = self._execute(args, cwd)
        if status == 0:
            return out
        failure = _GitFailed(status, err, err.startswith("Timeout:"))
        if failure.timed_out:
            raise ValidationError(
                "repo", f"cannot {verb} {repo!r}: git {args[0]} timed out after {self.timeout}s"
            )
        raise ValidationError("repo", f"cannot {verb} {repo!r}: {failure.tail()}")


@functools.lru_cache(maxsize=1)
def _git_version() -> tuple[int, ...]:
    return tuple(int(part) for part in Git().version_info[:2])


def _git_env(token: str | None, token_user: str) -> dict[str, str]:
    """Environment for every git call: no prompts, no tracing, the token as a header.

    ``GIT_CONFIG_COUNT`` (git ≥ 2.31) keeps the header out of argv, where
    ``ps`` and GitPython's debug log would show it; ``GIT_CONFIG_PARAMETERS``
    (what ``-c`` sets internally) covers older git.
    """
    env = {
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "/bin/false",
        "SSH_ASKPASS": "/bin/false",
        "GIT_ALLOW_PROTOCOL": "file:git:http:https:ssh",
        "GIT_TRACE": "0",
        "GIT_TRACE_CURL": "0",
        "GIT_TRACE_PACKET": "0",
        "GIT_CURL_VERBOSE": "0",
        "GIT_CONFIG_COUNT": "0",
        "GIT_CONFIG_PARAMETERS": "",
    }
    if "GIT_SSH_COMMAND" not in os.environ:
        env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes -o ConnectTimeout=15"
    if token:
        if any(ord(ch) < 32 for ch in token) or "'" in token:
            raise ValidationError("token", "git token contains control characters or quotes")
        basic = base64.b64encode(f"{token_user}:{token}".encode()).decode()
        header = f"Authorization: Basic {basic}"
        if _git_version() >= (2, 31):
            env["GIT_CONFIG_COUNT"] = "1"
            env["GIT_CONFIG_KEY_0"] = "http.extraHeader"
            env["GIT_CONFIG_VALUE_0"] = header
        else:
            env["GIT_CONFIG_PARAMETERS"] = f"'http.extraheader={header}'"
    return env
