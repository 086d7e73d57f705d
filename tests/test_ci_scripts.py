"""The Frappe stage of ``make test`` without a bench: what it says and how it exits.

Building a bench is CI's own job (minutes); these runs stop before any build,
so they take well under a second each and leave nothing behind.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "frappe-tests.sh"


def run(tmp_path: Path, script: Path = SCRIPT, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FRAPPE_", "AGENT_UPDATE_"))}
    base["AGENT_UPDATE_CACHE"] = str(tmp_path / "cache")
    return subprocess.run(
        ["bash", str(script)],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_no_framework_source_prints_one_skipped_line_and_passes(tmp_path: Path) -> None:
    done = run(tmp_path, FRAPPE_SRC="")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["frappe tests: SKIPPED (FRAPPE_SRC is empty)"]
    assert not (tmp_path / "cache").exists()


def test_a_named_source_that_is_missing_fails_and_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "frappe.tar.gz"
    done = run(tmp_path, FRAPPE_SRC=str(missing))
    assert done.returncode == 1
    assert f"FRAPPE_SRC={missing} does not exist" in done.stderr
    assert "SKIPPED" not in done.stdout


def test_a_bad_branch_name_is_refused_before_anything_runs(tmp_path: Path) -> None:
    tarball = tmp_path / "frappe.tar.gz"
    tarball.write_bytes(b"")
    done = run(tmp_path, FRAPPE_SRC=str(tarball), FRAPPE_BRANCH="v15; touch /tmp/x")
    assert done.returncode == 1
    assert "FRAPPE_BRANCH=v15; touch /tmp/x is not a branch name" in done.stderr
    assert not (tmp_path / "cache").exists()


def test_a_named_bench_that_does_not_exist_is_skipped_as_before(tmp_path: Path) -> None:
    done = run(tmp_path, AGENT_UPDATE_BENCH=str(tmp_path / "no-bench"))
    assert done.returncode == 0
    assert done.stdout.startswith("frappe tests: SKIPPED (AGENT_UPDATE_BENCH=")
    assert len(done.stdout.splitlines()) == 1


BENCH_SCRIPT = ROOT / "scripts" / "frappe-bench.sh"


def run_bench(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """frappe-bench.sh directly, as `make test`'s Press stage calls it."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FRAPPE_", "AGENT_UPDATE_"))}
    base.pop("PRESS_SRC", None)
    base["AGENT_UPDATE_CACHE"] = str(tmp_path / "cache")
    return subprocess.run(
        ["bash", str(BENCH_SCRIPT)],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_press_bench_with_a_named_press_source_that_is_missing_fails_and_names_it(
    tmp_path: Path,
) -> None:
    tarball = tmp_path / "frappe.tar.gz"
    tarball.write_bytes(b"")
    missing = tmp_path / "nowhere" / "press.tar.gz"
    done = run_bench(
        tmp_path, FRAPPE_SRC=str(tarball), AGENT_UPDATE_PRESS="1", PRESS_SRC=str(missing)
    )
    assert done.returncode == 1
    assert f"PRESS_SRC={missing} does not exist" in done.stderr
    assert "SKIPPED" not in done.stdout
    assert not (tmp_path / "cache").exists()


def test_press_bench_switch_takes_only_1_or_nothing(tmp_path: Path) -> None:
    tarball = tmp_path / "frappe.tar.gz"
    tarball.write_bytes(b"")
    done = run_bench(tmp_path, FRAPPE_SRC=str(tarball), AGENT_UPDATE_PRESS="yes")
    assert done.returncode == 1
    assert "AGENT_UPDATE_PRESS=yes: 1 or empty" in done.stderr
    assert not (tmp_path / "cache").exists()


def test_press_bench_without_a_framework_source_says_which_bench_it_skipped(
    tmp_path: Path,
) -> None:
    done = run_bench(tmp_path, FRAPPE_SRC="", AGENT_UPDATE_PRESS="1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["frappe tests (press): SKIPPED (FRAPPE_SRC is empty)"]


STAGES = ROOT / "scripts" / "test-stages.sh"


def run_stages(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return run(tmp_path, STAGES, **env)


def test_stages_run_side_by_side_each_line_named_and_timed(tmp_path: Path) -> None:
    done = run_stages(tmp_path, AGENT_UPDATE_STAGES="frappe,frappe-press", FRAPPE_SRC="")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "[frappe] frappe tests: SKIPPED (FRAPPE_SRC is empty)" in lines
    assert "[frappe-press] frappe tests (press): SKIPPED (FRAPPE_SRC is empty)" in lines
    assert sum(line.startswith(("timing: frappe ", "timing: frappe-press ")) for line in lines) == 2
    assert lines[-1] == "test stages: all passed (frappe,frappe-press)"


def test_a_failed_stage_fails_the_run_and_the_others_still_run(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.tar.gz"
    done = run_stages(tmp_path, AGENT_UPDATE_STAGES="frappe-press,frappe", FRAPPE_SRC=str(missing))
    assert done.returncode == 1
    assert f"[frappe] frappe bench: FRAPPE_SRC={missing} does not exist" in done.stdout
    assert f"[frappe-press] frappe bench: FRAPPE_SRC={missing} does not exist" in done.stdout
    assert done.stdout.splitlines()[-1] == "test stages: failed: frappe-press frappe"


def test_stages_and_workers_are_checked_and_named(tmp_path: Path) -> None:
    done = run_stages(tmp_path, AGENT_UPDATE_STAGES="pytest,docs")
    assert done.returncode == 2
    assert "AGENT_UPDATE_STAGES=pytest,docs: docs is not a stage" in done.stderr
    done = run_stages(tmp_path, AGENT_UPDATE_TEST_WORKERS="0; rm -rf /")
    assert done.returncode == 2
    assert "AGENT_UPDATE_TEST_WORKERS=0; rm -rf /: a number of processes" in done.stderr
