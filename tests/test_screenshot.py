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
from selenium.common.exceptions import StaleElementReferenceException
from sqlalchemy import select

from core.priority import Bucket
from core.tasks.demo import DemoTraffic
from db.models import Task
from tests.support.harness import Recorder, wait_until
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


def waiting_low(runtime, count: int) -> list[str]:
    """Low tasks that wait behind the normal backlog (the newest: the last to be reached)."""
    waiting = select(Task.id).where(Task.status == "queued", Task.bucket == "low")
    with runtime.db.session() as session:
        return list(session.scalars(waiting.order_by(Task.queued_at.desc()).limit(count)))


def queued(duo, bucket: str) -> int:
    """The overview's queued count for the bucket; -1 while it is being redrawn."""
    try:
        text = duo.find_element(f"#queued-{bucket}").text.replace(",", "")
    except StaleElementReferenceException:
        return -1
    return int(text) if text.isdigit() else -1


def test_con_s001_screenshots_of_a_live_console(console, runtime, start_worker, tmp_path):
    """The demo as `make run` starts it (a high-only worker and one for every bucket): a backlog
    forms in normal and low while the high bucket keeps moving. That is the first screen."""
    demo = DemoTraffic(runtime.service, interval_seconds=1.0, seed=7).start()
    start_worker(Recorder(), buckets=(Bucket.HIGH,), concurrency=4)
    start_worker(Recorder(), concurrency=4)
    try:
        time.sleep(6)  # some finished, some failed, a backlog queued
        sign_in(console, "admin")
        console.wait_for_element("#queue-matrix", timeout=20)
        wait_until(
            lambda: queued(console, "normal") + queued(console, "low") >= 20 and 0 <= queued(console, "high") <= 5,
            timeout=30,
            message="a backlog in normal and low, the high bucket moving",
        )
        console.wait_for_element("#workers-table", timeout=20)
        console.wait_for_element("#overview-throughput .main-svg", timeout=20)
        time.sleep(2.5)  # one more refresh, so the chart has its bars
        overview = shoot(console, "console-overview.png", tmp_path)
        console.driver.get(console.server.url + "/tasks")
        console.wait_for_element(".ag-row a.task-link", timeout=20)
        console.wait_for_element(".ag-row button", timeout=20)  # the actions of queued rows
        tasks = shoot(console, "console-tasks.png", tmp_path)
        # What people did: a few upgrades and a cancel, then one of those tasks and the history.
        waiting = waiting_low(runtime, 4)
        for task_id, action, who, why in zip(
            waiting,
            ("prioritize", "urgent", "prioritize"),
            ("otto", "mona", "otto"),
            ("customer on the phone", "the month-end report is due at noon", "blocks the nightly load"),
        ):
            runtime.service.upgrade_task(task_id, action, why, who)
        runtime.service.cancel_task(waiting[3], "mona", reason="sent twice")
        console.driver.get(console.server.url + f"/tasks/{waiting[1]}")
        console.wait_for_element("#task-timeline-events", timeout=20)
        task = shoot(console, "console-task.png", tmp_path)
        console.driver.get(console.server.url + "/history")
        console.wait_for_element("#history-by-user .main-svg", timeout=20)
        time.sleep(1)
        history = shoot(console, "console-history.png", tmp_path)
    finally:
        demo.stop()
    for picture in (overview, tasks, task, history):
        assert picture.stat().st_size > 20_000  # a rendered page, not a blank one
