"""The runner's and planner's view of a real server: SSH plus the agent API.

Composes the shells (ssh, agent_client, script, supervisor) into the
observations the pure machine consumes. One SSH connection per row is kept
open for its precheck, command and every probe, and reopened if it drops.
An exception met here becomes an observation (the machine judges it) and is
logged: at INFO when it is one of ours, at WARNING with its traceback else.
"""

from __future__ import annotations

import logging

from agent_update.remote import guard, runtime, script, supervisor
from agent_update.remote.agent_client import (
    AgentAuthError,
    AgentClient,
    AgentEndpoint,
    services_healthy,
)
from agent_update.remote.guard import RunAs
from agent_update.remote.ssh import (
    HostKeyError,
    SshAuthError,
    SshCredentials,
    SshError,
    SshSession,
    SshTarget,
)
from agent_update.rollout import rules
from agent_update.rollout.commands import PlanOutcome
from agent_update.rollout.errors import AgentUpdateError
from agent_update.rollout.model import EngineSettings, Server, Update
from agent_update.rollout.observations import CommandObs, PrecheckObs, ProbeObs, Programs
from agent_update.rollout.running import RunningObs

STATUS_TIMEOUT = 30.0  # seconds for `supervisorctl status`
CLIENT_MARGIN = 5.0  # seconds the client waits past the server-side limit and kill grace

log = logging.getLogger(__name__)


def _tail(output: str, limit: int = 300) -> str:
    """The last lines of an output, on one line: where a failure says why."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    text = " | ".join(lines[-3:]) or "(no output)"
    return text if len(text) <= limit else "…" + text[-limit:]


def _programs(output: str) -> Programs:
    """``{name: (state, pid)}`` of the agent's programs in a status output."""
    states = supervisor.agent_programs(supervisor.parse_status(output))
    return {name: (st.state, st.pid) for name, st in states.items()}


def _uptimes(output: str) -> dict[str, float]:
    """Seconds each RUNNING agent program has been up, where the status shows it."""
    states = supervisor.agent_programs(supervisor.parse_status(output))
    return {
        name: up
        for name, st in states.items()
        if st.running and (up := runtime.uptime_seconds(st.description)) is not None
    }


def validate_settings(settings: EngineSettings) -> None:
    """The settings that reach a shell: the template (rendered, parsed) and the status command."""
    script.validate_template(settings.update_command_template)
    script.render_status_command(settings.status_command)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, AgentUpdateError) else f"{type(exc).__name__}: {text}"


def _caught(server: Server, what: str, exc: BaseException) -> str:
    """``exc`` described for an observation, and logged since it is not re-raised."""
    text = _describe(exc)
    ours = isinstance(exc, AgentUpdateError)
    level = logging.INFO if ours else logging.WARNING
    log.log(level, "%s: %s: %s", server.name, what, text, exc_info=not ours)
    return text


class ServerLink:
    """I/O for one row on one server (see runner.ServerLink)."""

    def __init__(self, connector: SshConnector, server: Server, update: Update) -> None:
        self.connector = connector
        self.server = server
        self.update = update
        self._ssh: SshSession | None = None

    # ssh
    def _session(self) -> SshSession:
        if self._ssh is None:
            self._ssh = self.connector.ssh_session(self.server)
            self._ssh.__enter__()
        return self._ssh

    def _run(self, command: str, timeout: float):
        try:
            return self._session().run(command, timeout)
        except (SshError, OSError, EOFError) as exc:
            log.info("%s: ssh dropped (%s); reconnecting once", self.server.name, _describe(exc))
            self.close()  # a dropped connection is reopened once
            return self._session().run(command, timeout)

    def _run_as_agent(self, command: str, timeout: float):
        run_as = RunAs(ssh_user=self.server.ssh_user, agent_user=self.server.agent_user)
        return self._run(guard.as_agent_user(command, run_as), timeout)

    def status(self) -> tuple[Programs, str]:
        """Agent programs from the status command, and its raw output (to explain an empty list)."""
        command = script.render_status_command(self.connector.settings.status_command)
        result = self._run_as_agent(command, STATUS_TIMEOUT)
        return _programs(result.output), result.output

    def programs(self) -> Programs:
        return self.status()[0]

    # the three steps
    def precheck(self) -> PrecheckObs:
        try:
            # One look: program pids and uptimes, and HEAD's moves (the rollback target).
            look = runtime.command(self.server.agent_dir, self.connector.settings.status_command)
            seen = self._run_as_agent(look, STATUS_TIMEOUT).output
            output = runtime.status_text(seen)
            programs = _programs(output)
            if not programs:
                # Say what the status command printed: "Permission denied",
                # "a password is required", a missing supervisorctl …
                command = self.connector.settings.status_command.strip()
                return PrecheckObs(error=f"no agent program found by `{command}`: {_tail(output)}")
        except Exception as exc:
            return PrecheckObs(error=_caught(self.server, "precheck", exc))
        running = runtime.parse(seen)
        try:
            commit = self.connector.agent.version(self.connector.endpoint(self.server)).commit
        except Exception as exc:  # a down agent: a repair goes on, others fail (machine.py)
            error = _caught(self.server, "precheck", exc)
            return PrecheckObs(programs=programs, agent_error=error, running=running)
        return PrecheckObs(programs=programs, commit=commit, running=running)

    def build_command(self, commit: str, timeout: float) -> str:
        """The guarded update command for this server; ValidationError names a bad field.

        Any commit other than the update's own is a rollback's target.
        """
        server = rules.validate_server(self.server)
        field = "commit" if commit == self.update.commit else "rollback_commit"
        body = script.render_update_command(
            agent_dir=server.agent_dir,
            repo_url=self.update.repo,
            commit=commit,
            restart_web=self.update.restart_web,
            restart_rq=self.update.restart_rq,
            restart_redis=self.update.restart_redis,
            template=self.connector.settings.update_command_template or None,
            repair=self.update.repair,
            status_command=self.connector.settings.status_command,
            commit_field=field,
        )
        return guard.guarded(
            body,
            agent_dir=server.agent_dir,
            time_limit=timeout,
            run_as=RunAs(ssh_user=server.ssh_user, agent_user=server.agent_user),
        )

    def run_command(self, commit: str, timeout: float) -> CommandObs:
        try:
            command = self.build_command(commit, timeout)
        except Exception as exc:
            return CommandObs(
                exit_code=None,
                not_started=True,
                error=f"cannot build the update command: {_caught(self.server, 'command', exc)}",
            )
        try:
            # The server stops the command at ``timeout`` (guard.py); the client
            # waits for that verdict a little longer before cutting the session,
            # which stops the command there too.
            result = self._run(command, timeout + guard.KILL_GRACE + CLIENT_MARGIN)
        except Exception as exc:
            return CommandObs(exit_code=None, error=_caught(self.server, "command", exc))
        if guard.refused_by_lock(result.exit_code, result.output):
            return CommandObs(
                exit_code=result.exit_code,
                output=result.output,
                not_started=True,
                error=guard.BUSY,
                duration=result.duration,
            )
        if guard.never_started(result.exit_code, result.output):
            return CommandObs(
                exit_code=result.exit_code,
                output=result.output,
                not_started=True,
                error=f"the command could not start: {_tail(result.output)}",
                duration=result.duration,
            )
        return CommandObs(
            exit_code=result.exit_code,
            output=result.output,
            timed_out=result.timed_out
            or guard.stopped_by_time_limit(result.exit_code, result.output),
            duration=result.duration,
        )

    def probe(self) -> ProbeObs:
        """Ping, version and program states; the states even when the agent is down."""
        timeout = self.connector.settings.probe_timeout
        uptimes: dict[str, float] | None = None
        try:
            programs: Programs | None
            programs, output = self.status()
            uptimes = _uptimes(output)
            ssh_error = ""
        except Exception as exc:
            programs, ssh_error = None, f"ssh: {_caught(self.server, 'probe', exc)}"
        try:
            endpoint = self.connector.endpoint(self.server)
            if not self.connector.agent.ping(endpoint, timeout):
                return ProbeObs(pong=False, programs=programs, uptimes=uptimes)
            info = self.connector.agent.version(endpoint, timeout)
        except AgentUpdateError as exc:
            error = _caught(self.server, "probe", exc)
            return ProbeObs(pong=False, programs=programs, uptimes=uptimes, error=error)
        ok, why = services_healthy(info.services)
        return ProbeObs(
            pong=True,
            commit=info.commit,
            services_ok=ok,
            services_reason=why,
            programs=programs,
            error=ssh_error,
            uptimes=uptimes,
        )

    def close(self) -> None:
        if self._ssh is not None:
            try:
                self._ssh.__exit__(None, None, None)
            except Exception:  # closing a dead connection: nothing left to do with it
                log.debug("%s: closing ssh failed", self.server.name, exc_info=True)
            self._ssh = None


class SshConnector:
    """Opens ServerLinks and probes servers for Build Plan."""

    def __init__(self, settings: EngineSettings, agent: AgentClient | None = None) -> None:
        validate_settings(settings)  # nothing runs that could not be built
        self.settings = settings
        # TLS is always verified: against a private CA's bundle when one is set.
        verify: bool | str = settings.agent_ca_file or True
        self.agent = agent or AgentClient(timeout=settings.probe_timeout, verify=verify)
        self.credentials = SshCredentials(
            private_key=settings.ssh_private_key, known_hosts=settings.known_hosts
        )

    def ssh_session(self, server: Server) -> SshSession:
        target = SshTarget(host=server.host, port=server.ssh_port, user=server.ssh_user)
        return SshSession(target, self.credentials, connect_timeout=self.settings.connect_timeout)

    def endpoint(self, server: Server) -> AgentEndpoint:
        return AgentEndpoint(url=server.agent_url, password=server.agent_password)

    def open(self, server: Server, update: Update) -> ServerLink:
        return ServerLink(self, server, update)

    def plan_probe(self, server: Server) -> PlanOutcome:
        """SSH reachable with a known host key, the agent's commit, and whether it runs.

        An agent that is down, crash-looping or not answering over HTTP, and a
        server SSH cannot reach, give an unknown commit with the reason: Build
        Plan goes on, the row's precheck judges at its turn (a repair may fix
        it). A wrong host key, SSH key or agent password stays an error.
        """
        try:
            server = rules.validate_server(server)  # a value saved behind the rules' back
        except AgentUpdateError as exc:
            return PlanOutcome(error=f"registry: {_caught(server, 'plan', exc)}")
        try:
            look = guard.as_agent_user(
                runtime.command(server.agent_dir, self.settings.status_command),
                RunAs(ssh_user=server.ssh_user, agent_user=server.agent_user),
            )
            with self.ssh_session(server) as ssh:
                seen = runtime.parse(ssh.run(look, STATUS_TIMEOUT).output)
        except (HostKeyError, SshAuthError) as exc:
            return PlanOutcome(error=f"ssh: {_caught(server, 'plan', exc)}")
        except Exception as exc:
            return PlanOutcome(unknown=f"ssh: {_caught(server, 'plan', exc)}")
        try:
            info = self.agent.version(self.endpoint(server), self.settings.probe_timeout)
        except AgentAuthError as exc:
            return PlanOutcome(error=f"agent: {_caught(server, 'plan', exc)}")
        except Exception as exc:
            down = _not_running(seen)
            why = f"agent: {_caught(server, 'plan', exc)}" + (f" ({down})" if down else "")
            return PlanOutcome(unknown=why, running=seen)
        if not info.commit:
            return PlanOutcome(unknown="agent reported no commit", running=seen)
        return PlanOutcome(commit=info.commit, running=seen)


def _not_running(seen: RunningObs) -> str:
    """The agent programs that are not RUNNING, e.g. "agent:web is BACKOFF"."""
    down = [f"{name} is {state}" for name, (state, _) in sorted(seen.programs.items())]
    return ", ".join(d for d in down if not d.endswith(" is RUNNING"))
