"""`make bench`: every benchmark, one after the other."""

from __future__ import annotations

import runpy
from pathlib import Path

HERE = Path(__file__).resolve().parent

for name in ("scale.py", "headline.py", "engine.py", "fleet_overhead.py"):
    print(f"== {name}")
    runpy.run_path(str(HERE / name), run_name="__main__")
