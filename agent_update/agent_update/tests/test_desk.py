"""What an operator meets in the desk: a pasted key, the app's queue, a form kept in step.

Each test asserts the stored end state (the encrypted key, the queue a job
really went to, what the agents run) besides what the API answers.
"""

from __future__ import annotations

import json
import logging
import subprocess

import frappe
from frappe.utils.background_jobs import generate_qname, get_queue, get_queues_timeout
from frappe.utils.password import get_decrypted_password

from agent_update import api
from agent_update import frappe_codec as codec
from agent_update.agent_update.tests.support import FleetCase
from agent_update.frappe_log import LEVEL_KEY, app_log
from agent_update.frappe_service import (
    APP_QUEUE,
    INLINE_FLAG,
    JobLauncher,
    QueueInfo,
    app_queue,
    queue_info,
)

SETTINGS = codec.SETTINGS_DOCTYPE


class TestDesk(FleetCase):
    FLEET_SIZE = 2
    SERVER_TYPE = "Loopback Desk"

    def fingerprint(self) -> str:
        """What ssh-keygen says of the fleet's client key (the reference, not our code)."""
        out = subprocess.run(
            ["ssh-keygen", "-lf", str(self.fleet.client_key_path)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        return f"ssh-{out[-1].strip('()').lower()} {out[1]}"

    def stored_key(self) -> str | None:
        return get_decrypted_password(SETTINGS, SETTINGS, "ssh_private_key", False)

    def test_a_pasted_key_is_checked_stored_encrypted_and_only_its_fingerprint_shown(self) -> None:
        key = self.fleet.client_key
        body = [line for line in key.splitlines() if line and "-----" not in line]
        self.addCleanup(self._configure_settings)  # the fleet's key back for other tests

        folded = " ".join(key.splitlines())  # a one-line input loses the line breaks
        out = api.set_ssh_private_key(key=folded)
        frappe.db.commit()
        self.assertEqual(out, {"fingerprint": self.fingerprint()})
        self.assertEqual(self.stored_key(), key.strip() + "\n")
        plain = frappe.db.sql(
            "SELECT value FROM tabSingles WHERE doctype=%s AND field='ssh_private_key'", SETTINGS
        )[0][0]
        self.assertEqual(set(plain), {"*"})  # the doc's own column holds a placeholder
        cipher = frappe.db.sql(
            "SELECT `password` FROM `__Auth` WHERE doctype=%s AND fieldname='ssh_private_key'",
            SETTINGS,
        )[0][0]
        self.assertNotIn(body[0], cipher)
        sent = json.dumps(frappe.get_doc(SETTINGS, SETTINGS).as_dict(), default=str)
        for line in body:  # what the form loads: the fingerprint, never the key
            self.assertNotIn(line, sent)
        self.assertIn(self.fingerprint(), sent)

        # The pasted key really reaches the servers.
        doc = self.new_update(commit=self.fleet.commits.good, hosts=1)
        api.build_plan(doc.name, now=True)
        api.start(doc.name, now=True)
        row = self.load(doc.name).servers[0]
        self.assertEqual(
            (row.status, self.running(row.server)), ("Success", self.fleet.commits.good)
        )

        broken = key.replace(body[1], body[1][::-1])
        for bad in (broken, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 me@host"):
            with self.assertRaises(frappe.ValidationError) as caught:
                api.set_ssh_private_key(key=bad)
            self.assertIn("SSH Private Key", str(caught.exception))
            frappe.db.rollback()
            self.assertEqual(self.stored_key(), key.strip() + "\n")  # the good key stays
            self.assertEqual(
                frappe.db.get_single_value(SETTINGS, "ssh_key_fingerprint"), self.fingerprint()
            )

        self.assertEqual(api.set_ssh_private_key(key=""), {"fingerprint": ""})
        frappe.db.commit()
        self.assertIsNone(self.stored_key())

    def test_jobs_go_to_the_app_queue_and_fall_back_to_long_with_a_warning(self) -> None:
        workers = dict(frappe.local.conf.get("workers") or {})

        def configure(queues: dict) -> None:
            frappe.local.conf["workers"] = queues
            get_queues_timeout.cache_clear()  # read once per process by the framework

        self.addCleanup(configure, workers)
        frappe.flags[INLINE_FLAG] = False
        self.addCleanup(frappe.flags.__setitem__, INLINE_FLAG, True)

        def launched_on() -> str:
            job = JobLauncher()
            job("AU-NO-SUCH", 1, "test-owner")
            queue = get_queue(app_queue())
            found = [
                j
                for j in queue.get_jobs()
                if j.kwargs.get("kwargs", {}).get("name") == "AU-NO-SUCH"
            ]
            for j in found:
                j.delete()
            self.assertEqual(len(found), 1)
            return found[0].origin

        configure({**workers, APP_QUEUE: {"timeout": 7200}})
        self.assertEqual(app_queue(), APP_QUEUE)
        self.assertEqual(launched_on(), generate_qname(APP_QUEUE))
        self.assertTrue(queue_info().configured)

        configure({k: v for k, v in workers.items() if k != APP_QUEUE})
        self.assertEqual(app_queue(), "long")
        self.assertEqual(launched_on(), generate_qname("long"))
        info = queue_info()
        self.assertFalse(info.configured)
        self.assertIn(f"The {APP_QUEUE} queue is not configured", info.warning(1))

        self.assertIn("3 lanes need 4 workers", QueueInfo(APP_QUEUE, True, 1).warning(3))
        self.assertEqual(QueueInfo(APP_QUEUE, True, 4).warning(3), "")

        doc = self.new_update(commit=self.fleet.commits.good, lanes=2)
        doc.run_method("onload")
        self.assertEqual(doc.get_onload().queue_warning, queue_info().warning(2))
        self.assertTrue(doc.get_onload().queue_warning)  # long: always worth a warning
        self.assertEqual(api.state(doc.name)["queue_warning"], doc.get_onload().queue_warning)

    def test_the_polled_state_follows_every_status_and_the_grid_reads_right(self) -> None:
        good, base = self.fleet.commits.good, self.fleet.commits.base
        doc = self.new_update(commit=good)
        self.assertEqual(api.state(doc.name)["status"], "Draft")
        api.build_plan(doc.name, now=True)
        state = api.state(doc.name)
        self.assertEqual(state["status"], "Pending")
        self.assertEqual({r.status for r in state["rows"]}, {"Pending"})
        api.start(doc.name, now=True)
        state = api.state(doc.name)
        self.assertEqual(state["status"], "Success")
        self.assertEqual(state["progress"], 100)
        stored = self.load(doc.name)
        for polled, row in zip(state["rows"], stored.servers, strict=True):
            self.assertEqual((polled.idx, polled.status), (row.idx, "Success"))
            # Previous = what ran before; Running = what the agent reports now, and really runs.
            self.assertEqual((row.current_commit, row.reported_commit), (base, good))
            self.assertEqual(self.running(row.server), good)
            elapsed = (row.end - row.start).total_seconds()
            self.assertGreater(row.duration, 0)
            self.assertAlmostEqual(row.duration, elapsed, delta=1.0)

        meta = frappe.get_meta(codec.ROW_DOCTYPE)
        self.assertEqual(meta.get_label("current_commit"), "Previous Commit")
        self.assertEqual(meta.get_label("reported_commit"), "Running Commit")
        shown = {f.fieldname: f.columns for f in meta.fields if f.in_list_view}
        self.assertEqual(sum(shown.values()), 10)
        for wide in ("status", "current_commit", "reported_commit", "reason"):
            self.assertGreaterEqual(shown[wide], 2, wide)  # "Rolled Back", "Previous Commit"
        self.assertIn("Draft", meta.get_field("server").read_only_depends_on)
        self.assertTrue(frappe.get_meta(codec.UPDATE_DOCTYPE).get_field("split_from").in_list_view)

    def test_an_aborted_update_is_final_for_the_api_and_the_form(self) -> None:
        """One list of final statuses, the engine's, for api.py and the form (sent in onload)."""
        from agent_update.rollout.model import FINAL_UPDATE_STATUSES

        doc = self.new_update(commit=self.fleet.commits.good)
        api.build_plan(doc.name, now=True)
        pending = api.state(doc.name)
        self.assertFalse(pending["final"])
        self.assertEqual(pending["queue_warning"], queue_info().warning(1))
        api.abort(doc.name, reason="test", now=True)
        state = api.state(doc.name)
        self.assertEqual(state["status"], "Aborted")
        self.assertTrue(state["final"])  # the form stops polling
        self.assertEqual(state["queue_warning"], "")  # and drops the queue warning
        self.assertEqual(api.summary(doc.name)["final"], True)

        form = self.load(doc.name)
        form.run_method("onload")
        sent = form.get_onload().statuses
        self.assertEqual(set(sent["final"]), {s.value for s in FINAL_UPDATE_STATUSES})
        self.assertIn("Aborted", sent["final"])
        self.assertEqual(form.get_onload().queue_warning, "")
        script = frappe.get_app_path(
            "agent_update", "agent_update", "doctype", "agent_rollout", "agent_rollout.js"
        )
        with open(script) as f:
            text = f.read()
        self.assertNotIn('"Partial Success", "Failure"', text)  # no copy of the list in JS
        self.assertIn("statuses", text)

    def test_a_realtime_event_that_fails_is_logged_and_never_stops_the_row(self) -> None:
        from unittest import mock

        from agent_update.frappe_service import publish
        from agent_update.rollout.model import Row

        broken = mock.patch.object(frappe, "publish_realtime", side_effect=OSError("redis down"))
        with broken, self.assertLogs(frappe.logger("agent_update"), "ERROR") as logged:
            publish("AU-X", Row(idx=3, server="s3"), None)  # returns: the row goes on
        self.assertIn("AU-X: realtime event for row 3 not sent", logged.output[0])
        self.assertIn("OSError: redis down", logged.output[0])  # with its traceback

    def test_the_app_log_level_comes_from_the_site_config(self) -> None:
        """INFO by default (Frappe's own default would drop every step); a name that is
        not a level is logged and INFO kept; the engine's lines follow the same level."""
        engine = logging.getLogger("agent_update")
        try:
            for wanted, level in (("DEBUG", logging.DEBUG), ("warning", logging.WARNING)):
                frappe.local.conf[LEVEL_KEY] = wanted
                self.assertEqual(app_log().level, level)
                self.assertEqual(engine.level, level)
            frappe.local.conf[LEVEL_KEY] = "LOUD"
            with self.assertLogs(frappe.logger("agent_update"), "WARNING") as logged:
                self.assertEqual(app_log().level, logging.INFO)
            self.assertIn("'LOUD' is not a log level", logged.output[0])
        finally:
            frappe.local.conf.pop(LEVEL_KEY, None)
            app_log()
        self.assertEqual((app_log().level, engine.level), (logging.INFO, logging.INFO))
