"""One shell per kind of I/O with a server; the engine sees only observations.

ssh            paramiko sessions with strict host-key checking
agent_client   the agent's HTTP API (/ping, /version), bounded in time
git_source     GitPython: resolve a branch head, check a commit exists
script         the update command and status command, validated and quoted
guard          the server-side lock, time limit and stop on a cut session
runtime        one SSH look at pids, uptimes and HEAD's moves
supervisor     parsing ``supervisorctl status``
resolve        the addresses a host name reaches (one machine, one server)
connector      composes them into a ServerLink per row
"""
