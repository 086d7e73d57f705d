"""The rollout's data: an update, its rows, and the servers they point at.

Plain dataclasses and enums so the engine, the SQLite store and the Frappe
layer share one vocabulary (the operators' words, see docs/design.md §1).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from enum import Enum


class UpdateStatus(str, Enum):
    DRAFT = "Draft"
    PLANNING = "Planning"
    PENDING = "Pending"
    RUNNING = "Running"
    PAUSED = "Paused"
    SUCCESS = "Success"
    PARTIAL_SUCCESS = "Partial Success"
    FAILURE = "Failure"
    ABORTED = "Aborted"  # stopped for good by an operator (not a Pause)

    @property
    def is_final(self) -> bool:
        return self in FINAL_UPDATE_STATUSES


FINAL_UPDATE_STATUSES = frozenset(
    {
        UpdateStatus.SUCCESS,
        UpdateStatus.PARTIAL_SUCCESS,
        UpdateStatus.FAILURE,
        UpdateStatus.ABORTED,
    }
)


def ended(status: UpdateStatus, now: float, **more: object) -> dict[str, object]:
    """The changes that end an update: its final status, when, and no overlap
    warning (a finished update holds no server, so it overlaps nothing)."""
    return dict(status=status, ended_at=now, overlap_warning="", **more)


# Pause reasons the engine writes itself; a script tells a test-mode pause by its start.
OPERATOR_PAUSE = "paused by an operator; Resume goes on"
TEST_MODE_PAUSE = "test mode:"


class GateAction(str, Enum):
    """What a wave whose gate fails does to the rollout."""

    PAUSE = "Pause"  # wait for an operator: Resume opens the next wave anyway
    HALT = "Halt"  # start nothing more; the rollout ends


class RowStatus(str, Enum):
    DRAFT = "Draft"
    PENDING = "Pending"
    SKIPPED = "Skipped"
    RUNNING = "Running"
    VERIFYING = "Verifying"
    SUCCESS = "Success"
    FAILURE = "Failure"
    ROLLING_BACK = "Rolling Back"
    ROLLED_BACK = "Rolled Back"
    FATAL = "Fatal"

    @property
    def in_flight(self) -> bool:
        return self in IN_FLIGHT_ROW_STATUSES

    @property
    def ended(self) -> bool:
        return self in ENDED_ROW_STATUSES


IN_FLIGHT_ROW_STATUSES = frozenset({RowStatus.RUNNING, RowStatus.VERIFYING, RowStatus.ROLLING_BACK})
# FAILURE is "ended" only once no rollback will follow; the machine decides.
ENDED_ROW_STATUSES = frozenset(
    {
        RowStatus.SKIPPED,
        RowStatus.SUCCESS,
        RowStatus.FAILURE,
        RowStatus.ROLLED_BACK,
        RowStatus.FATAL,
    }
)
FAILED_ROW_STATUSES = frozenset({RowStatus.FAILURE, RowStatus.ROLLED_BACK, RowStatus.FATAL})


class Step(str, Enum):
    """Where a row stands inside its status; what a resumed runner does next.

    Stored with the row so a runner killed between two steps is resumed by
    the next one at the right place (and never re-runs a command blindly).
    """

    NONE = ""
    PRECHECK = "precheck"  # about to check opt-out and program states
    COMMAND = "command"  # about to run (or re-run) the command
    COMMAND_SENT = "command_sent"  # command started; outcome not recorded
    VERIFY = "verify"  # polling the agent until healthy or deadline


class AgentStatus(str, Enum):
    UNKNOWN = ""
    ACTIVE = "Active"
    INACTIVE = "Inactive"


@dataclass
class Server:
    """One entry of the server registry."""

    name: str
    host: str
    server_type: str = "Server"
    ssh_port: int = 22
    ssh_user: str = "frappe"
    agent_dir: str = "/home/frappe/agent"
    agent_user: str = "frappe"  # the steps run as this user (sudo -u when SSH logs in as another)
    agent_url: str = ""
    agent_password: str = ""
    status: str = "Active"
    disable_agent_update: bool = False
    self_hosted: bool = False
    tags: str = ""  # comma-separated labels an update can select servers by (e.g. "eu, canary")

    @property
    def opted_out(self) -> bool:
        return bool(self.opt_out_reason)

    @property
    def opt_out_reason(self) -> str:
        """Why the registry says not to update it ("" when it may be updated)."""
        if self.disable_agent_update:
            return "opted out of agent updates (disable_agent_update is set)"
        if self.status != "Active":
            return f"opted out of agent updates (status is {self.status or 'empty'}, not Active)"
        return ""

    def copy(self, **changes: object) -> Server:
        return replace(self, **changes)


@dataclass
class Update:
    """One rollout: what to install, how, and where it stands."""

    name: str = ""
    # Source
    repo: str = ""
    branch: str = ""
    commit: str = ""
    commit_message: str = ""
    # Config
    server_types: tuple[str, ...] = ()
    exclude_self_hosted: bool = False
    restart_web: bool = True
    restart_rq: bool = False
    restart_redis: bool = False
    startup_timeout: float = 600.0  # seconds the agent has to come back healthy
    command_timeout: float = 1800.0  # seconds the update command may run
    failed_command_grace: float = 20.0  # verify window after a non-zero exit
    verdict_window: float = 30.0  # after the command: a program still restarting then fails
    bake_time: float = 0.0  # seconds the agent must stay healthy
    # Seconds each restarted program must keep one pid, RUNNING, from its start
    # (Nomad's min_healthy_time): a program dying a few seconds after each
    # start answers a single probe healthy.
    min_healthy_time: float = 10.0
    lanes: int = 1  # servers updated at once
    failure_budget: int = 0  # halt once more rows than this have failed (0: no budget)
    # ... or once more than this share of the rows that ran failed, overall or in
    # the open wave, counted only from failure_min_sample rows that ran (0: none)
    failure_budget_percent: float = 0.0
    failure_min_sample: int = 10
    # Waves (ramp-up): sizes of the first waves, e.g. "1, 5, 20%"; then up to the
    # lanes. A wave opens once every row of the previous one has ended and the
    # share of successes so far is at least wave_success_threshold (percent).
    waves: str = ""
    wave_success_threshold: float = 95.0
    wave_gate_action: GateAction = GateAction.PAUSE
    # Whole-rollout deadline (epoch seconds; nothing new starts after it) and
    # the stall alert: no row ended for stall_minutes (0: off) while running.
    deadline_at: float | None = None
    stall_minutes: float = 0.0
    # Rollback
    auto_rollback: bool = True
    rollback_to_specific: bool = False
    rollback_commit: str = ""
    stop_after_single_rollback: bool = False
    # Repair: the precheck accepts programs that are down or crash-looping and
    # the command restarts every agent program; verification is the usual one.
    repair: bool = False
    # Test mode
    test_mode: bool = False
    test_mode_count: int = 1
    paused_for_test_mode: bool = False
    # Waves' state: the open wave (1-based; past the listed ones, the rest), the
    # rows started in it, and the counts when it opened (its own outcome is the
    # difference); a Resume after a gate's pause accepts that gate once.
    wave: int = 1
    wave_started: int = 0
    wave_base_succeeded: int = 0
    wave_base_failed: int = 0
    paused_at_gate: bool = False
    gate_override: bool = False
    pause_reason: str = ""
    # Abort: stops for good; optionally rolls back the rows updated in this rollout.
    aborted: bool = False
    abort_rollback: bool = False
    abort_reason: str = ""
    stall_notified_at: float | None = None
    # Targets beyond the server type: name patterns (globs, comma-separated; any
    # matches) and tags (comma-separated; a server must carry every one).
    server_pattern: str = ""
    server_tags: str = ""
    # Schedule: the update starts itself at start_at (epoch seconds; the watchdog
    # tick starts it), and servers start only inside the maintenance window
    # (rollout.schedule, e.g. "Mon-Fri 22:00-04:00"); why nothing starts now.
    start_at: float | None = None
    window: str = ""
    waiting_reason: str = ""
    # Approval: Start by one person needs approval by another (rollout.approval).
    approval_required: bool = False
    start_requested_by: str = ""
    approved_by: str = ""
    approved_at: float | None = None
    # State
    status: UpdateStatus = UpdateStatus.DRAFT
    halted: bool = False
    halt_reason: str = ""
    started_at: float | None = None
    ended_at: float | None = None
    why_stuck: str = ""
    overlap_warning: str = ""  # servers also in other unfinished updates (Build Plan, Start)
    split_from: str = ""
    # Who is planning (Planning status only): a dead planner's lease expires.
    lease_owner: str = ""
    lease_expires: float | None = None

    def copy(self, **changes: object) -> Update:
        return replace(self, **changes)

    def changed_fields(self, other: Update) -> list[str]:
        """Names of the fields whose values differ from ``other``'s."""
        return _diff(self, other)


@dataclass
class Row:
    """One server in one rollout (Agent Rollout Server)."""

    idx: int
    server: str
    server_type: str = ""
    status: RowStatus = RowStatus.DRAFT
    step: Step = Step.NONE
    current_commit: str = ""
    rollback_commit: str = ""
    reported_commit: str = ""
    agent_status: AgentStatus = AgentStatus.UNKNOWN
    started_at: float | None = None
    ended_at: float | None = None
    deadline: float | None = None  # of the current command or verification
    healthy_since: float | None = None
    reason: str = ""
    attempts: int = 0
    log: str = ""
    pids_before: str = ""  # JSON {program: pid} recorded by the precheck
    command_ended_at: float | None = None  # when a command was seen to end (fast verdicts)
    seen_after: str = ""  # JSON: what each program did since then (rollout.verdicts)
    lease_owner: str = ""
    lease_expires: float | None = None

    def copy(self, **changes: object) -> Row:
        return replace(self, **changes)

    def changed_fields(self, other: Row) -> list[str]:
        """Names of the fields whose values differ from ``other``'s."""
        return _diff(self, other)


def _diff(new: object, old: object) -> list[str]:
    return [f.name for f in fields(new) if getattr(new, f.name) != getattr(old, f.name)]


LOG_LIMIT = 8000  # characters of log kept per row: the tail matters most


def last_log_line(log: str) -> str:
    """The newest line of a row's log ("" when it has none)."""
    return log.rstrip().rsplit("\n", 1)[-1]


def append_log(log: str, line: str) -> str:
    """Append a line, keeping only the newest LOG_LIMIT characters."""
    text = f"{log}\n{line}" if log else line
    return text[-LOG_LIMIT:]


@dataclass
class EngineSettings:
    """What the runner needs besides the update: credentials and knobs."""

    ssh_private_key: str = ""
    known_hosts: str = ""
    update_command_template: str = ""  # empty: the default of remote.script
    status_command: str = "sudo -n supervisorctl status"  # supervisord's socket is root-only
    git_token: str = ""
    git_cache_dir: str = ""
    poll_interval: float = 0.2  # seconds between two health probes
    probe_timeout: float = 5.0  # one HTTP request to an agent
    connect_timeout: float = 10.0  # one SSH connection
    lease_ttl: float = 60.0  # a row's lease; renewed while a runner works on it
    plan_concurrency: int = 64  # servers probed at once by Build Plan
    default_repo: str = ""
    default_branch: str = ""
    agent_ca_file: str = ""  # PEM bundle of a private CA for agents' TLS ("": the system's)
