"""Stand-in for ``pip`` in a fleet host's agent env.

Real installs would be slow and need the network; what the orchestrator must
handle is only pip's verdict. So this checks each requirement against what
the fleet's Python already has and fails with pip's own wording and exit
status when one is missing. Copied to ``<agent>/env/bin/pip`` with a shebang.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import sys
from pathlib import Path

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


ENV_PACKAGES = Path(__file__).resolve().parent.parent / "packages.txt"


def installed(name: str) -> bool:
    """In the env's list (when the fleet wrote one), or importable by this Python."""
    if ENV_PACKAGES.is_file():
        listed = {line.strip().lower() for line in ENV_PACKAGES.read_text().splitlines()}
        if name.lower() in listed:
            return True
    try:
        importlib.metadata.distribution(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        return importlib.util.find_spec(name.replace("-", "_").lower()) is not None
    except (ImportError, ValueError):
        return False


def read_requirements(path: Path) -> list[str]:
    lines = []
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith(("#", "-")):
            lines.append(line)
    return lines


def install(args: list[str]) -> int:
    wanted: list[str] = []
    editable: list[str] = []
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg in ("-r", "--requirement") and rest:
            path = Path(rest.pop(0))
            if not path.is_file():
                print(
                    "ERROR: Could not open requirements file: "
                    f"[Errno 2] No such file or directory: '{path}'",
                    file=sys.stderr,
                )
                return 1
            wanted += read_requirements(path)
        elif arg in ("-e", "--editable") and rest:
            editable.append(rest.pop(0))
        elif not arg.startswith("-"):
            wanted.append(arg)
    for requirement in wanted:
        match = _NAME.match(requirement)
        if match and not installed(match.group(1)):
            print(
                f"ERROR: Could not find a version that satisfies the requirement "
                f"{requirement} (from versions: none)",
                file=sys.stderr,
            )
            print(f"ERROR: No matching distribution found for {requirement}", file=sys.stderr)
            return 1
        print(f"Requirement already satisfied: {requirement}")
    for target in editable:
        project = Path(target).resolve()
        if not ((project / "setup.py").is_file() or (project / "pyproject.toml").is_file()):
            print(
                f"ERROR: file://{project} does not appear to be a Python project: "
                "neither 'setup.py' nor 'pyproject.toml' found.",
                file=sys.stderr,
            )
            return 1
        print(f"Obtaining file://{project}")
        print("Successfully installed agent")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["install"]:
        return install(args[1:])
    print("pip (loopback fleet stand-in): only `install -r` and `install -e` are understood")
    return 0


if __name__ == "__main__":
    sys.exit(main())
