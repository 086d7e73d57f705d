"""``python -m agent_update.testing.soak``: run a soak; exit 1 when an invariant was violated.

Prints the seed first (``--seed`` replays a run's draws), the faults
injected by kind, and last one line: ``soak: F faults, R rollouts, N rows,
V violations, seed S``.
"""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import sys
from pathlib import Path

from agent_update.testing.desk_site import cached_bench
from agent_update.testing.soak.driver import Shape
from agent_update.testing.soak.session import Options, run


def parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m agent_update.testing.soak", description=__doc__
    )
    parser.add_argument("--minutes", type=float, default=20.0, help="time faults are injected")
    parser.add_argument("--seed", type=int, default=None, help="default: drawn and printed")
    parser.add_argument("--hosts", type=int, default=40, help="loopback hosts (2 … 253)")
    parser.add_argument("--concurrent", type=int, default=4, help="rollouts unfinished at once")
    parser.add_argument(
        "--fault-every", type=float, default=3.0, help="mean seconds between faults"
    )
    parser.add_argument("--root", type=Path, default=None, help="where fleet and logs go")
    parser.add_argument("--keep", action="store_true", help="keep the logs even when all held")
    parser.add_argument(
        "--desk",
        nargs="?",
        const="cached",
        default=None,
        metavar="BENCH",
        help="the desk's door too, on a built bench (default: the one `make test` cached)",
    )
    parser.add_argument("--desk-workers", type=int, default=5, help="the desk's RQ workers")
    args = parser.parse_args(argv)
    if args.minutes <= 0:
        parser.error("--minutes must be more than 0")
    if not 2 <= args.hosts <= 253:
        parser.error("--hosts must be within 2 … 253")
    if args.concurrent < 1 or args.fault_every <= 0:
        parser.error("--concurrent must be at least 1 and --fault-every more than 0")
    desk = None
    if args.desk is not None:
        desk = cached_bench() if args.desk == "cached" else Path(args.desk)
        if desk is None:
            parser.error("--desk: no cached bench; run `make test` once, or name one")
        if not (desk / "env" / "bin" / "python").exists():
            parser.error(f"--desk: {desk} is not a built bench (no env/bin/python)")
    if args.desk_workers < 2:
        parser.error("--desk-workers must be at least 2")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    high = max(4, min(12, args.hosts // 3))
    shape = Shape(hosts=(min(4, args.hosts), high), concurrent=args.concurrent)
    return Options(
        minutes=args.minutes,
        seed=seed,
        hosts=args.hosts,
        fault_every=args.fault_every,
        shape=shape,
        root=args.root,
        keep=args.keep,
        desk_bench=desk,
        desk_workers=args.desk_workers,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    result = run(options)
    print(result.report)
    if not result.violations and not options.keep and options.root is None:
        shutil.rmtree(result.root, ignore_errors=True)
    elif result.violations:
        print(f"soak: logs kept under {result.root}")
    print(result.line, flush=True)
    return 1 if result.violations else 0


if __name__ == "__main__":
    sys.exit(main())
