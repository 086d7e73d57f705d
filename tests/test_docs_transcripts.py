"""The sessions in docs/cli.md and docs/waves.md, run again on a fresh fleet.

Each doc's session must mask to the same text as this run (update names,
commits, ports, paths, passwords, pids and times masked alike on both
sides): a command whose output, exit code or wording changed fails here
until the doc says so (`python -m agent_update.testing.transcript --write`).
"""

from __future__ import annotations

import pytest

from agent_update.testing import transcript

pytestmark = pytest.mark.fleet


@pytest.mark.parametrize("name", sorted(transcript.SESSIONS))
def test_the_docs_session_is_what_the_tool_prints(fleet, tmp_path, name):
    live = transcript.run_session(name, fleet, tmp_path)
    diff = transcript.difference(name, live)
    assert not diff, (
        f"docs session {name} differs from this run; if the change is meant, "
        f"rewrite it with: python -m agent_update.testing.transcript --write {name}\n{diff}"
    )


def test_masks_tell_apart_what_matters():
    masks = transcript.Masks()
    a = "AU-0123456789 commit 0c4c7b0d1901 on 127.0.0.2:4242 in 0:03\n"
    b = "AU-abcdefabcd commit 7bdde50c5ec6 on 127.0.0.2:5151 in 0:07\n"
    assert masks(a) == masks(b)
    assert masks(a) != masks(a.replace("commit", "kommit"))
    assert masks("exit 5\n") != masks("exit 7\n")
