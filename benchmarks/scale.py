"""The engine's own cost per server, 1,000 against 10,000 servers (docs/design.md §12).

Zero-time commands on simulated servers, the SQLite store, 20 lanes: what
is left is scheduling, leases and stored steps. Each size runs in a child
process of its own, so its peak RSS is its own. Prints, never asserts.

    python benchmarks/scale.py            # both sizes side by side
    python benchmarks/scale.py 2000       # one size (what the parent runs)
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from simserver import SimConnector, planned_store

from agent_update.rollout.model import (
    EngineSettings,
    RowStatus,
)
from agent_update.service import Service

SIZES = (1000, 10000)
LANES = 20


def measure(count: int, lanes: int = LANES) -> dict[str, float]:
    """One rollout of ``count`` planned rows; seconds, writes and peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        store, name = planned_store(Path(tmp) / "scale.db", count, lanes=lanes)
        service = Service(store, EngineSettings(poll_interval=0.0), connector=SimConnector())
        before = store.writes
        t0 = time.perf_counter()
        service.start(name)
        final = service.drive(name)
        secs = time.perf_counter() - t0
        ended = store.get_rows(name, ["idx", "server", "status"])
        return {
            "servers": count,
            "secs": secs,
            "ms_per_server": 1000 * secs / count,
            "writes_per_server": (store.writes - before) / count,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "success": sum(r.status is RowStatus.SUCCESS for r in ended),
            "status": final.status.value,  # type: ignore[dict-item]
        }


def main(argv: list[str]) -> None:
    if argv:
        print(json.dumps(measure(int(argv[0]))))
        return
    print(f"engine cost per server, zero-time commands, SQLite store, {LANES} lanes:")
    for count in SIZES:
        out = subprocess.run(
            [sys.executable, __file__, str(count)], capture_output=True, text=True, check=True
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"  {r['servers']:>6} servers: {r['ms_per_server']:6.2f} ms/server "
            f"({r['secs']:.1f}s), {r['writes_per_server']:.2f} writes/server, "
            f"peak RSS {r['peak_rss_mb']:.0f} MB, {r['success']} Success ({r['status']})"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
