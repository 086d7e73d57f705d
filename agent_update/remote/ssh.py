"""Running one command on a server over SSH, bounded in time, host key checked.

Keys and known hosts come as text from the settings: nothing is read from
or written to ``~/.ssh``, no agent or default keys are tried, and an
unknown host key is refused (never trusted on first use). Errors are typed
so a row's reason says what to fix: the known hosts, the key, or the network.
"""

from __future__ import annotations

import io
import logging
import select
import socket
import time
from dataclasses import dataclass, field
from types import TracebackType

import paramiko
from paramiko.hostkeys import HostKeyEntry, InvalidHostKey

from agent_update.rollout.errors import AgentUpdateError, ValidationError

log = logging.getLogger(__name__)

OUTPUT_LIMIT = 64 * 1024  # bytes of output kept: the tail explains a failure
KEEPALIVE = 15  # seconds; long RQ restarts must not look like a dead link
_POLL = 0.5  # longest single wait; the deadline is checked between waits


class SshError(AgentUpdateError):
    """The command could not be run over SSH (its own failure is an exit code)."""


class HostKeyError(SshError):
    """The server's host key is not (or differently) in the known hosts setting."""


class SshAuthError(SshError):
    """The server refused the key, or the key setting cannot be read."""


class SshConnectError(SshError):
    """No SSH conversation: refused, unreachable, timed out, or not an SSH server."""


@dataclass(frozen=True)
class SshTarget:
    host: str
    port: int = 22
    user: str = "frappe"

    def __post_init__(self) -> None:
        if not self.host or any(ch.isspace() or ch in "@/[]" for ch in self.host):
            raise ValidationError("host", f"SSH host {self.host!r} is not a host name or address")
        if not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise ValidationError("ssh_port", f"SSH port {self.port!r} is not within 1 … 65535")
        if not self.user or any(ch.isspace() or ch in "@:/" for ch in self.user):
            raise ValidationError("ssh_user", f"SSH user {self.user!r} is not a user name")

    @property
    def known_hosts_name(self) -> str:
        """How known_hosts names this target: ``host``, or ``[host]:port`` off 22."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


@dataclass(frozen=True)
class SshCredentials:
    """Private key (OpenSSH/PEM text: ed25519, rsa, ecdsa) and known_hosts text."""

    private_key: str = field(repr=False)
    known_hosts: str


@dataclass(frozen=True)
class CommandResult:
    exit_code: int | None  # None when timed out; -1 when ended without a status
    output: str  # stdout and stderr interleaved, last OUTPUT_LIMIT bytes
    timed_out: bool
    duration: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


def load_private_key(text: str) -> paramiko.PKey:
    """The key in ``text``, trying each supported type; SshAuthError if none fits."""
    if not text or not text.strip():
        raise SshAuthError("the SSH private key setting is empty")
    for cls in (paramiko.Ed25519Key, paramiko.RSAKey, paramiko.ECDSAKey):
        try:
            return cls.from_private_key(io.StringIO(text.strip() + "\n"))
        except paramiko.PasswordRequiredException as exc:
            raise SshAuthError(
                "the SSH private key is passphrase-protected; use one without"
            ) from exc
        except (paramiko.SSHException, ValueError, TypeError) as exc:
            log.debug("the SSH private key is not %s: %s", cls.__name__, exc)
            continue
    raise SshAuthError("the SSH private key setting is not an ed25519, RSA or ECDSA key")


def parse_known_hosts(text: str) -> paramiko.HostKeys:
    """known_hosts text (plain or hashed names) as paramiko host keys; bad lines skipped."""
    keys = paramiko.HostKeys()
    for lineno, raw in enumerate((text or "").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", "@")):
            continue
        try:
            entry = HostKeyEntry.from_line(line, lineno)
        except (InvalidHostKey, paramiko.SSHException, ValueError) as exc:
            log.info("known_hosts line %d ignored: %s", lineno, exc)
            continue
        if entry is None or entry.key is None:
            continue
        for name in entry.hostnames:
            keys.add(name, entry.key.get_name(), entry.key)
    return keys


class _Reject(paramiko.RejectPolicy):
    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey):
        raise HostKeyError(
            f"host {hostname} is not in the known hosts setting (it offered "
            f"{key.get_name()} {key.fingerprint}); the known hosts setting must list it"
        )


class SshSession:
    """One SSH connection to run several commands (precheck, update, status).

    ``with SshSession(target, creds) as ssh: ssh.run("echo hi", timeout=5)``
    """

    def __init__(
        self, target: SshTarget, creds: SshCredentials, connect_timeout: float = 10
    ) -> None:
        self.target = target
        self.creds = creds
        self.connect_timeout = connect_timeout
        self._client: paramiko.SSHClient | None = None

    def __enter__(self) -> SshSession:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def connect(self) -> None:
        key = load_private_key(self.creds.private_key)
        client = paramiko.SSHClient()
        for name, by_type in parse_known_hosts(self.creds.known_hosts).items():
            for key_type, host_key in by_type.items():
                client.get_host_keys().add(name, key_type, host_key)
        client.set_missing_host_key_policy(_Reject())
        target, timeout = self.target, self.connect_timeout
        try:
            client.connect(
                target.host,
                port=target.port,
                username=target.user,
                pkey=key,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                channel_timeout=timeout,
                look_for_keys=False,
                allow_agent=False,
            )
        except BaseException as exc:
            client.close()
            raise _translate(exc, target) from exc
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(KEEPALIVE)
        self._client = client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def run(self, command: str, timeout: float) -> CommandResult:
        """Run ``command`` (no pty) and wait at most ``timeout`` seconds.

        On timeout the channel is closed and ``timed_out`` is set; the remote
        command may go on until it next writes. The exit code is only a hint
        (docs/design.md §9): callers verify the outcome.
        """
        if self._client is None:
            raise SshError(f"{self.target}: not connected")
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise SshConnectError(f"{self.target}: the SSH connection was lost")
        started = time.monotonic()
        deadline = started + timeout
        try:
            channel = transport.open_session(timeout=self.connect_timeout)
            channel.set_combine_stderr(True)
            channel.exec_command(command)
        except (paramiko.SSHException, OSError) as exc:
            raise SshConnectError(f"{self.target}: cannot start the command: {exc}") from exc
        output = bytearray()
        timed_out = False
        try:
            while True:
                while channel.recv_ready():
                    output += channel.recv(65536)
                    if len(output) > 2 * OUTPUT_LIMIT:
                        del output[:-OUTPUT_LIMIT]
                remaining = deadline - time.monotonic()
                if channel.eof_received or channel.closed:
                    if channel.status_event.wait(max(0.0, min(remaining, _POLL))):
                        while channel.recv_ready():
                            output += channel.recv(65536)
                        break
                elif remaining > 0:
                    select.select([channel], [], [], min(remaining, _POLL))
                if time.monotonic() >= deadline:
                    timed_out = True
                    break
        except (paramiko.SSHException, OSError) as exc:  # the output says so; verification judges
            log.info("%s: connection lost during a command: %s", self.target, exc)
            output += f"\n[connection lost: {exc}]".encode()
        finally:
            exit_code = None if timed_out else channel.exit_status
            channel.close()
        return CommandResult(
            exit_code=exit_code,
            output=bytes(output[-OUTPUT_LIMIT:]).decode("utf-8", errors="replace"),
            timed_out=timed_out,
            duration=time.monotonic() - started,
        )


def _translate(exc: BaseException, target: SshTarget) -> BaseException:
    """Map paramiko's and socket errors onto the three an operator can act on."""
    if isinstance(exc, SshError):
        return exc
    if isinstance(exc, paramiko.BadHostKeyException):
        return HostKeyError(
            f"host key of {target.known_hosts_name} does not match the known hosts setting "
            f"(server offered {exc.key.get_name()} {exc.key.fingerprint}, expected "
            f"{exc.expected_key.fingerprint}); fix the known hosts setting if the change is "
            "legitimate"
        )
    if isinstance(exc, paramiko.AuthenticationException):
        return SshAuthError(f"{target}: the server refused the SSH key ({exc})")
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return SshConnectError(f"{target}: no SSH answer within the connect timeout")
    if isinstance(exc, (OSError, EOFError)):
        return SshConnectError(f"{target}: cannot connect: {exc}")
    if isinstance(exc, paramiko.SSHException):
        return SshConnectError(f"{target}: SSH handshake failed: {exc}")
    return exc


def run(
    target: SshTarget,
    creds: SshCredentials,
    command: str,
    timeout: float,
    connect_timeout: float = 10,
) -> CommandResult:
    """Connect, run one command, disconnect."""
    with SshSession(target, creds, connect_timeout) as session:
        return session.run(command, timeout)
