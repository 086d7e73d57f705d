"""The Repair flag on the Agent Update form reaches the engine and back."""

from __future__ import annotations

import frappe
from frappe.tests.utils import FrappeTestCase

from agent_update import frappe_codec as codec
from agent_update.rollout.model import Update


class TestRepairField(FrappeTestCase):
    def test_the_form_field_maps_to_the_engine_flag(self) -> None:
        field = frappe.get_meta(codec.UPDATE_DOCTYPE).get_field("repair")
        self.assertIsNotNone(field)
        self.assertEqual((field.fieldtype, field.default), ("Check", "0"))
        self.assertIn("repair", codec.CONFIG_FIELDS)  # an operator sets it, the engine never
        self.assertEqual(codec.update_values(Update(repair=True), ["repair"]), {"repair": 1})
        for flag in (True, False):
            values = codec.update_values(Update(repair=flag), list(codec.UPDATE_COLUMNS))
            self.assertIs(codec.update_from(values).repair, flag)
