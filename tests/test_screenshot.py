"""The README's screenshots, taken by the test suite's browser on a live demo system.

Every run takes them (and checks the pages showed live data); with SWITCHYARD_SCREENSHOT_DIR
set they are also written there: `SWITCHYARD_SCREENSHOT_DIR=docs/images make test
PYTEST_ARGS="-k con_s001"` refreshes the README's pictures.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from core.tasks.demo import DemoTraffic
from tests.support.harness import Recorder
from tests.test_browser import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]


def shoot(duo, name: str, tmp_path: Path) -> Path:
    path = tmp_path / name
    assert duo.driver.save_screenshot(str(path))
    target = os.environ.get("SWITCHYARD_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / name)
    return path


def test_con_s001_screenshots_of_a_live_console(console, runtime, start_worker, tmp_path):
    demo = DemoTraffic(runtime.service, interval_seconds=0.5, seed=7).start()
    start_worker(Recorder(), concurrency=2)
    try:
        time.sleep(6)  # some finished, some failed, some still queued
        sign_in(console, "admin")
        console.wait_for_element("#queue-matrix", timeout=20)
        console.wait_for_element("#workers-table", timeout=20)
        console.wait_for_element("#overview-throughput .main-svg", timeout=20)
        time.sleep(2.5)  # one more refresh, so the chart has its bars
        overview = shoot(console, "console-overview.png", tmp_path)
        console.driver.get(console.server.url + "/tasks")
        console.wait_for_element(".ag-row a.task-link", timeout=20)
        console.wait_for_element(".ag-row button", timeout=20)  # the actions of queued rows
        tasks = shoot(console, "console-tasks.png", tmp_path)
    finally:
        demo.stop()
    for picture in (overview, tasks):
        assert picture.stat().st_size > 20_000  # a rendered page, not a blank one
