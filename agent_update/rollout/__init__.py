"""The engine: decisions as pure functions, and the runner that applies them.

No module here imports frappe; ``now`` is an input wherever time matters.

Data and rules
    model          Update, Row, Server, EngineSettings and their statuses
    observations   what a runner saw on a server (the decisions' inputs)
    errors         ValidationError (names the field), TransitionError, LeaseLost
    refs           validation of commits, branches, repo URLs, hosts, paths
    rules          an update's and a server's rules; settings' ranges; deadlines
    targets        servers selected by name pattern and tags
    schedule       scheduled start and maintenance windows
    approval       four eyes: Start by one person, Approve by another
    budget, waves  failure budget; ramp-up waves and their gates
Decisions
    decide         update level: which rows start, resume, roll back; halts; end
    machine        row level: precheck, command, verification, rollback
    verdicts       fast verdicts from the programs' pid history after the command
    min_healthy    a program must stay up this long before a row is Success
    rollback_target  the commit to roll back to, from what the programs run
    repair         a repair update's precheck and rollback rule
    running        what runs since when (Build Plan skips; stale programs)
    commands       the buttons as pure transitions; Build Plan's outcome
    split, history split an update; per-server history and undo
    tally, eta, stall, steplog, words   counts, ETA, stall alert, log lines, plurals
Shells around the decisions
    runner, drive, threads, links   walk rows, kick updates, heartbeats, launchers
    planner        Build Plan's probes, many at once
    store, sqlite_codec, sqlite_history, server_leases, machines
                   the Store protocol, the SQLite store, leases per machine
"""
