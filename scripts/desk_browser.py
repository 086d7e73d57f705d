"""Playwright helpers for the Frappe desk (v15), used by press_walkthrough.py.

Each waits for what the desk draws, not for time: a form is ready when
``cur_frm`` holds its document and no freeze is up; a saved new document when
the route names it and its rows are drawn.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from PIL import Image
from playwright.sync_api import Page

MAX_PNG = 250_000  # bytes: docs/ images stay small


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def save_png(page: Page, out: Path, name: str, **kwargs: Any) -> Path:
    """A 1280x800 screenshot, quantised to 256 colours (desk pages have few)."""
    path = out / f"press-{name}.png"
    page.screenshot(path=str(path), **kwargs)
    image = Image.open(path).convert("RGB")
    image.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        path, optimize=True
    )
    size = path.stat().st_size
    if size > MAX_PNG:
        raise SystemExit(f"{path} is {size} bytes (> {MAX_PNG})")
    log(f"wrote {path} ({size // 1000} kB)")
    return path


def open_form(page: Page, route: str, doctype: str) -> None:
    page.goto(f"/app/{route}")
    page.wait_for_function(
        "dt => window.cur_frm && cur_frm.doc && cur_frm.doc.doctype === dt"
        " && !document.querySelector('.freeze')",
        arg=doctype,
        timeout=180_000,
    )
    page.wait_for_timeout(800)  # the form's refresh handlers draw buttons and indicators


def scroll_to(page: Page, fieldname: str, offset: int = 90) -> None:
    page.evaluate(
        """([f, off]) => {
            const el = document.querySelector(`.form-section[data-fieldname="${f}"], `
                + `.frappe-control[data-fieldname="${f}"]`);
            window.scrollTo(0, el.getBoundingClientRect().top + window.scrollY - off);
        }""",
        [fieldname, offset],
    )
    page.wait_for_timeout(400)


def click_button(page: Page, label: str) -> None:
    page.locator(".page-actions button:visible, .inner-group-button button:visible").filter(
        has_text=label
    ).first.click()


def click_save(page: Page) -> None:
    page.locator(".page-head:visible .primary-action:visible").filter(has_text="Save").click()


def confirm(page: Page) -> None:
    page.locator(".modal.show .btn-primary:visible").filter(has_text="Yes").click()


def wait_form(page: Page, condition: str, timeout: float) -> None:
    page.wait_for_function(condition, timeout=timeout * 1000, polling=500)
    page.wait_for_timeout(600)


def add_server_type(page: Page, kind: str) -> None:
    """One row of the Server Types table, typed as an operator would."""
    grid = page.locator('.frappe-control[data-fieldname="server_types"]')
    grid.locator(".grid-add-row").click()
    row = grid.locator(".grid-body .grid-row").last
    row.locator('[data-fieldname="server_type"]').first.click()
    row.locator('input[data-fieldname="server_type"]').fill(kind)
    # Tab would add a row after the last one: click away instead
    grid.locator(".control-label").first.click()


def wait_saved(page: Page, rows: int) -> str:
    """After Ctrl+S on a new document: routed to its name, its rows drawn. The name."""
    wait_form(
        page,
        "!cur_frm.is_new() && !cur_frm.is_dirty()"
        " && decodeURIComponent(location.pathname).endsWith('/' + cur_frm.doc.name)",
        120,
    )
    selector = '.frappe-control[data-fieldname="servers"] .grid-body .grid-row'
    page.wait_for_function(f"document.querySelectorAll('{selector}').length >= {rows}")
    page.wait_for_timeout(500)
    return page.evaluate("cur_frm.doc.name")


def open_row(page: Page, idx: int) -> None:
    grid = page.locator('.frappe-control[data-fieldname="servers"]')
    grid.locator(f'.grid-row[data-idx="{idx}"] .btn-open-row').first.click()
    page.wait_for_selector(".grid-row-open .form-in-grid", timeout=30_000)
    page.wait_for_timeout(700)


def close_row(page: Page) -> None:
    page.locator(".grid-row-open .grid-collapse-row").first.click()
    page.wait_for_selector(".grid-row-open", state="detached", timeout=30_000)
