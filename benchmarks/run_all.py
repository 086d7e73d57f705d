"""`make bench`: every benchmark, one after the other; the desk path's last.

desk_fleet.py runs the desk path on the loopback fleet (a site of its own in
the cached bench's Python, beside the CLI path). The desk benchmark (desk.py)
runs inside a Frappe bench: scripts/frappe-bench.sh
builds or reuses the cached one and gives it a site of its own; with no
framework source it prints one SKIPPED line (docs/desk-bench.md).
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

for name in ("scale.py", "headline.py", "engine.py", "fleet_overhead.py", "desk_fleet.py"):
    print(f"== {name}", flush=True)
    try:
        runpy.run_path(str(HERE / name), run_name="__main__")
    except SystemExit as done:  # a script that ends with sys.exit(main())
        if done.code not in (0, None):
            raise

print("== desk.py (in the Frappe bench: scripts/frappe-bench.sh)", flush=True)
desk = subprocess.run(
    ["bash", str(HERE.parent / "scripts" / "frappe-bench.sh")],
    env={**os.environ, "AGENT_UPDATE_DESK_BENCH": "1"},
    check=False,
)
sys.exit(desk.returncode)
