"""The fault soak: many rollouts at once under random faults, invariants checked all along.

Modules:

* ``faults``: the fault kinds, the seeded scheduler that draws them, and the
  injector that does them to a host (and heals them);
* ``invariants``: pure checks over observations, each returning violations;
* ``observer``: samples the hosts' side and the store, runs the invariants;
* ``driver``: rollouts through the ``agent-update`` CLI over one SQLite store
  (runners killed with SIGKILL, buttons pressed at random);
* ``desk_door``: rollouts through a Frappe site of the soak's own and its RQ
  workers (``--desk``), and the desk's faults (worker kills, Redis and
  MariaDB restarts);
* ``session``: one soak from start to end, and its report;
* ``__main__``: ``python -m agent_update.testing.soak --minutes N --seed S --hosts 40``.

See docs/soak.md.
"""
