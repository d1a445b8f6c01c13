"""Overview: the throughput chart's data (counted in SQL) and its fixed last-hour axis."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import plotly.graph_objects as go
from sqlalchemy import insert

from core.observe.stats import throughput_last_hour
from dashboard.pages import overview
from db.models import Task

NOW = datetime(2026, 3, 10, 12, 30, 20, 500_000, tzinfo=timezone.utc)


def finished(task_id: str, status: str, minutes_ago: float) -> dict:
    at = NOW - timedelta(minutes=minutes_ago)
    return dict(
        id=task_id, name="demo.echo", category="webapp", phase="default", priority=5, bucket="normal",
        status=status, args={}, generation=1, attempts=1, max_attempts=3,
        created_at=at - timedelta(seconds=5), queued_at=at - timedelta(seconds=5), started_at=at, finished_at=at,
    )  # fmt: skip


def test_con_o001_throughput_is_every_minute_of_the_last_hour_counted_in_sql(runtime):
    empty = throughput_last_hour(runtime.db, NOW)
    # now - 60 min .. now: 12:29:20.5 .. 12:30:20.5 an hour earlier, one bin per started minute.
    assert empty["start"] == "2026-03-10T11:30:20.500000+00:00" and empty["end"] == NOW.isoformat()
    assert len(empty["minutes"]) == 61
    assert empty["minutes"][0] == "2026-03-10T11:30:00+00:00" and empty["minutes"][-1] == "2026-03-10T12:30:00+00:00"
    assert empty["succeeded"] == [0] * 61 and empty["failed"] == [0] * 61

    with runtime.db.session(write=True) as session:
        session.execute(
            insert(Task),
            [
                finished("old", "succeeded", 61),  # before the window
                finished("a", "succeeded", 59.5),  # 11:30:50, the first (partial) minute
                finished("b", "succeeded", 0.1),  # 12:30
                finished("c", "succeeded", 0.2),  # 12:30
                finished("d", "failed", 0.25),  # 12:30
                finished("e", "cancelled", 1),  # not a throughput
                finished("later", "succeeded", -2),  # after `now`
            ],
        )
    data = throughput_last_hour(runtime.db, NOW)
    assert data["minutes"] == empty["minutes"]
    assert {i: n for i, n in enumerate(data["succeeded"]) if n} == {0: 1, 60: 2}
    assert {i: n for i, n in enumerate(data["failed"]) if n} == {60: 1}


def test_con_o002_throughput_chart_keeps_the_hour_on_its_axis_even_when_empty(runtime):
    snapshot = {"taken_at": NOW.isoformat(), "errors": [], "throughput": throughput_last_hour(runtime.db, NOW)}
    figure = overview._throughput(snapshot)
    layout = figure["layout"]
    assert layout["xaxis"]["type"] == "date"
    assert layout["xaxis"]["range"] == ["2026-03-10 11:30:20", "2026-03-10 12:30:20"]
    assert layout["yaxis"]["range"] == [0, 1]  # nothing finished: an empty hour, not a blank chart
    assert [len(trace["x"]) for trace in figure["data"]] == [61, 61]
    assert figure["data"][0]["x"][0] == "2026-03-10 11:30:30"  # bars sit in the middle of their minute
    go.Figure(figure)  # a valid figure, as plotly itself reads it

    # Without a database answer the chart still shows the hour before the snapshot was taken.
    down = overview._throughput({"taken_at": NOW.isoformat(), "errors": ["database unavailable"]})
    assert down["layout"]["xaxis"]["range"] == ["2026-03-10 11:30:20", "2026-03-10 12:30:20"]
