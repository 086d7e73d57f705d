"""HTTP client of the agent's ``/ping`` and ``/version`` endpoints.

Used to plan (which commit each server runs) and to verify an update (the
agent answers pong on the target commit with its services running). Errors
are typed so a caller can tell "not up yet" (retry) from "wrong password"
(waiting will not help) from "answered nonsense".
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from agent_update.rollout.errors import AgentUpdateError, ValidationError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0


class AgentError(AgentUpdateError):
    """The agent could not be asked or gave no usable answer."""


class AgentUnreachable(AgentError):
    """Connection refused, timed out, or a gateway error: the agent is not up."""


class AgentAuthError(AgentError):
    """401/403: the agent password is wrong; retrying will not help."""


class AgentProtocolError(AgentError):
    """The agent answered, but not with the JSON shape it should."""


@dataclass(frozen=True)
class AgentEndpoint:
    """Base URL of an agent (``https://host/agent``) and its password."""

    url: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url or "")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValidationError(
                "agent_url", f"agent URL {self.url!r} must be http(s)://host[:port][/path]"
            )
        if parts.username or parts.password:
            raise ValidationError("agent_url", "agent URL must not carry credentials")

    def join(self, path: str) -> str:
        return f"{self.url.rstrip('/')}/{path.lstrip('/')}"


@dataclass(frozen=True)
class VersionInfo:
    """What ``GET /version`` said: the checked-out commit and service states."""

    commit: str | None
    services: dict[str, Any]
    raw: dict[str, Any]


class AgentClient:
    """Keeps one keep-alive ``requests.Session`` per thread (sessions are not
    thread-safe), so concurrent probes reuse connections without sharing one.
    """

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, verify: bool | str = True) -> None:
        self.timeout = timeout
        self.verify = verify
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # no proxies or netrc from the environment
            self._local.session = session
        return session

    def close(self) -> None:
        """Close this thread's session (other threads' close when they end)."""
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()
            self._local.session = None

    def _get(self, endpoint: AgentEndpoint, path: str, timeout: float | None) -> dict[str, Any]:
        url = endpoint.join(path)
        try:
            response = self._session().get(
                url,
                headers={"Authorization": f"bearer {endpoint.password}"},
                timeout=self.timeout if timeout is None else timeout,
                allow_redirects=False,
                verify=self.verify,
            )
        except requests.Timeout as exc:
            raise AgentUnreachable(f"{url}: no answer within {timeout or self.timeout}s") from exc
        except requests.RequestException as exc:
            raise AgentUnreachable(f"{url}: {_short(exc)}") from exc
        status = response.status_code
        if status in (401, 403):
            raise AgentAuthError(f"{url}: HTTP {status}, check the agent password")
        if status in (502, 503, 504):
            raise AgentUnreachable(f"{url}: HTTP {status} (agent not answering behind proxy)")
        if status != 200:
            raise AgentProtocolError(f"{url}: HTTP {status}: {response.text[:200]!r}")
        try:
            body = response.json()
        except ValueError as exc:
            raise AgentProtocolError(f"{url}: not JSON: {response.text[:200]!r}") from exc
        if not isinstance(body, dict):
            raise AgentProtocolError(f"{url}: expected a JSON object, got {body!r:.200}")
        return body

    def ping(self, endpoint: AgentEndpoint, timeout: float | None = None) -> bool:
        """True only when the agent answers 200 ``{"message": "pong"}``.

        "Not up yet" (refused, timeout, 5xx, odd body) is False, for polling;
        a rejected password raises AgentAuthError since waiting won't fix it.
        """
        try:
            body = self._get(endpoint, "ping", timeout)
        except (AgentUnreachable, AgentProtocolError) as exc:
            log.debug("ping: not up: %s", exc)  # polled until healthy or the deadline
            return False
        return body.get("message") == "pong"

    def version(self, endpoint: AgentEndpoint, timeout: float | None = None) -> VersionInfo:
        """The commit the agent has checked out and its services; raises AgentError."""
        body = self._get(endpoint, "version", timeout)
        commit = body.get("commit")
        if commit is not None and not isinstance(commit, str):
            raise AgentProtocolError(f"{endpoint.join('version')}: commit is {commit!r}")
        services = body.get("services") or {}
        if not isinstance(services, dict):
            raise AgentProtocolError(f"{endpoint.join('version')}: services is {services!r:.200}")
        commit = commit.strip().lower() if commit else None
        return VersionInfo(commit=commit or None, services=services, raw=body)


def _short(exc: BaseException) -> str:
    """The innermost cause of a requests error, without its long repr chain."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    text = str(exc) or type(exc).__name__
    return text[:300]


_default = AgentClient()


def ping(endpoint: AgentEndpoint, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """``AgentClient.ping`` on a shared client."""
    return _default.ping(endpoint, timeout)


def version(endpoint: AgentEndpoint, timeout: float = DEFAULT_TIMEOUT) -> VersionInfo:
    """``AgentClient.version`` on a shared client."""
    return _default.version(endpoint, timeout)


def services_healthy(
    services: Mapping[str, Any], keys: Iterable[str] | None = None
) -> tuple[bool, str]:
    """Whether every reported service (or only those under ``keys``) is RUNNING.

    Walks nested shapes like ``{"web": "RUNNING", "worker": {"0": "RUNNING"}}``.
    Nothing reported counts as healthy: older agents report no services.
    """
    wanted = None if keys is None else set(keys)
    bad: list[str] = []
    seen = 0

    def walk(path: str, value: Any) -> None:
        nonlocal seen
        if isinstance(value, Mapping):
            for key, sub in value.items():
                walk(f"{path}.{key}" if path else str(key), sub)
            return
        seen += 1
        if not (isinstance(value, str) and value.strip().upper() == "RUNNING"):
            bad.append(f"{path} is {value!r}")

    for key, value in services.items():
        if wanted is None or key in wanted:
            walk(str(key), value)
    missing = sorted(wanted - set(services)) if wanted and services else []
    if bad or missing:
        parts = bad + [f"{name} not reported" for name in missing]
        return False, "services not running: " + ", ".join(parts)
    return True, f"{seen} services running" if seen else "no services reported"
