"""What users felt, from synthetic records of known shape: error rate, how long until they were served again,
how long p95 stayed over the warning level, when the first alarm was raised, and the write figures."""

from __future__ import annotations

import pytest
from drill_testkit import T0, event, requests, session, write_attempts, write_run, writes_summary

from drills import measures
from drills.measures import FAULT, WINDOW_S
from pynomaly_ops.baselines import load

SLOW_S = 1.8 * load().thresholds.response_time_p95_ms.warning / 1000  # well over the warning level
FAST_S = 0.05  # the records' latency otherwise: well under it


def _events(*more: dict) -> list[dict]:
    started, fault = event("measurement started", 0), event(FAULT, 20, {"fault": "kill_process"})
    return [started, fault, *more, event("measurement stopped", 59.95)]


def _measure(tmp_path, records, data):
    return measures.measure(write_run(tmp_path / "run", records, data), load())


def test_the_levels_these_tests_assume():
    assert load().thresholds.response_time_p95_ms.warning > 1000 * FAST_S
    assert WINDOW_S == 5.0  # the expected p95_back_s figures below are in 5 s windows


def test_an_outage_after_the_fault(tmp_path):
    # 3 s of refused connections starting 0.5 s after the fault: 60 of 1200 requests.
    records = requests(60, failing=lambda s: 20.5 <= s < 23.5)
    m = _measure(tmp_path, records, session(_events()))
    assert (m["requests"], m["failed"]) == (1200, 60)
    assert m["error_rate_percent"] == pytest.approx(5.0)
    assert m["longest_outage_s"] == pytest.approx(3.0)
    assert m["user_recovery_s"] == pytest.approx(3.5)  # served again 3.5 s after the fault
    assert m["fault_at"] == T0 + 20
    assert m["p95_ms"] == pytest.approx(1000 * FAST_S)
    assert m["p95_back_s"] == 0.0  # never over the warning level
    assert m["aborted"] is False
    assert m["first_alarm"] is None and m["alarms_fired"] == {}


def test_no_failure_means_no_recovery_time(tmp_path):
    m = _measure(tmp_path, requests(60), session(_events()))
    assert (m["failed"], m["error_rate_percent"], m["longest_outage_s"], m["user_recovery_s"]) == (0, 0.0, 0.0, 0.0)


def test_failures_long_before_the_fault_are_not_the_recovery(tmp_path):
    records = requests(60, failing=lambda s: 2 <= s < 4)  # a blip at the start, 16 s before the fault
    m = _measure(tmp_path, records, session(_events()))
    assert m["failed"] == 40 and m["longest_outage_s"] == pytest.approx(2.0)
    assert m["user_recovery_s"] == 0.0


def test_the_last_outage_after_the_fault_is_the_recovery(tmp_path):
    records = requests(60, failing=lambda s: 21 <= s < 22 or 27 <= s < 29.5)  # a relapse
    m = _measure(tmp_path, records, session(_events()))
    assert m["user_recovery_s"] == pytest.approx(9.5)
    assert m["longest_outage_s"] == pytest.approx(2.5)


@pytest.mark.parametrize(("slow_for", "expected"), [(10, 10.0), (12, 15.0), (15, 15.0)])
def test_p95_back_after_a_known_slow_span(tmp_path, slow_for, expected):
    """p95 over warning for ``slow_for`` s from the fault, fast after: back at the end of the last window
    (of WINDOW_S, from the fault) whose p95 was over."""
    records = requests(60, latency=lambda s: SLOW_S if 20 <= s < 20 + slow_for else FAST_S)
    m = _measure(tmp_path, records, session(_events()))
    assert m["p95_back_s"] == pytest.approx(expected)
    assert slow_for <= m["p95_back_s"] < slow_for + WINDOW_S


def test_slowness_before_the_fault_does_not_count_for_p95_back(tmp_path):
    records = requests(60, latency=lambda s: SLOW_S if 5 <= s < 15 else FAST_S)
    m = _measure(tmp_path, records, session(_events()))
    assert m["p95_back_s"] == 0.0
    assert m["p95_ms"] == pytest.approx(1000 * SLOW_S)  # over the whole drill, it was slow


def test_windows_give_rate_error_rate_and_p95():
    records = requests(10, failing=lambda s: 5 <= s < 5.5, latency=lambda s: SLOW_S if s < 5 else FAST_S)
    rows = measures.windows(records)
    assert [r["at"] - T0 for r in rows] == [0.0, 5.0]
    assert [r["rate_per_s"] for r in rows] == [20.0, 20.0]
    assert [r["error_rate_percent"] for r in rows] == [0.0, pytest.approx(10.0)]
    assert [r["p95_ms"] for r in rows] == [pytest.approx(1000 * SLOW_S), pytest.approx(1000 * FAST_S)]
    assert measures.windows([]) == []


def test_detection_is_the_first_alarm_raised_after_the_fault(tmp_path):
    alarms = {
        "error_rate.critical": {"pending": T0 + 21.0, "firing": T0 + 23.0},
        "no_healthy_hosts.critical": {"firing": T0 + 26.5},
        "response_time_p95.warning": {},  # nothing seen: not raised
    }
    m = _measure(tmp_path, requests(60, failing=lambda s: 20 <= s < 25), session(_events(), alarms=alarms))
    assert m["alarms_fired"] == {
        "error_rate.critical": pytest.approx(1.0),  # its first state, pending
        "no_healthy_hosts.critical": pytest.approx(6.5),
    }
    assert m["first_alarm"] == {"key": "error_rate.critical", "after_s": pytest.approx(1.0)}


def test_an_alarm_raised_before_the_fault_is_not_its_detection(tmp_path):
    """Something else raised it (the measurement's own start, a flapping rule): the fault's detection is the
    first alarm raised after the fault, never a negative time."""
    alarms = {
        "response_time_p95.warning": {"pending": T0 + 12.0},
        "error_rate.critical": {"pending": T0 + 22.0, "firing": T0 + 24.0},
    }
    m = _measure(tmp_path, requests(60), session(_events(), alarms=alarms))
    assert m["first_alarm"] == {"key": "error_rate.critical", "after_s": pytest.approx(2.0)}
    assert m["alarms_fired"]["response_time_p95.warning"] == pytest.approx(-8.0)  # on the timeline, before


def test_without_a_fault_mark_times_count_from_the_first_request(tmp_path):
    """A run aborted before its fault: nothing is measured from a fault that never came."""
    data = session([event("measurement started", 0), event("measurement stopped", 30)], aborted_at=T0 + 10)
    m = _measure(tmp_path, requests(30, failing=lambda s: 3 <= s < 5), data)
    assert m["fault_at"] is None
    assert m["user_recovery_s"] == pytest.approx(5.0)
    assert m["aborted"] is True


def test_write_figures_come_from_the_write_summary(tmp_path):
    data = session(_events(), writes=writes_summary(acknowledged=4321, lost=0, outage_s=6.25))
    m = _measure(tmp_path, requests(60), data)
    assert (m["writes_acknowledged"], m["writes_lost"], m["write_outage_s"]) == (4321, 0, 6.25)


def test_no_failed_write_is_a_zero_write_outage(tmp_path):
    data = session(_events(), writes=writes_summary(acknowledged=5000, lost=0, outage_s=None))
    m = _measure(tmp_path, requests(60), data)
    assert m["write_outage_s"] == 0.0 and m["writes_lost"] == 0


@pytest.mark.parametrize("back", measures.ZONE_BACK)
def test_the_write_outage_after_a_zone_comes_back_is_its_own(tmp_path, back):
    """The failover's outage (20-26 s) is before the zone came back (30 s); the one a rejoin causes (40-43 s)
    is the figure, not the failover's and not both."""
    failing = lambda s: 20 <= s < 26 or 40 <= s < 43  # noqa: E731
    data = session(_events(event(back, 30)), writes=writes_summary(acknowledged=900, lost=0, outage_s=6.0))
    write_run(tmp_path, requests(60), data, write_attempts(60, failing))
    m = measures.measure(tmp_path, load())
    assert m["write outage after the zone came back (s)"] == pytest.approx(3.05)
    assert m["write_outage_s"] == 6.0


def test_no_write_outage_after_the_zone_came_back_is_zero(tmp_path):
    data = session(_events(event("zone healed", 30)), writes=writes_summary(acknowledged=900, lost=0, outage_s=6.0))
    write_run(tmp_path, requests(60), data, write_attempts(60, lambda s: 20 <= s < 26))
    assert measures.measure(tmp_path, load())["write outage after the zone came back (s)"] == 0.0


def test_lost_writes_not_checked_stay_unknown(tmp_path):
    """An aborted run skips the read-back: the RPO figure is unknown (None), which no objective counts as met."""
    data = session(_events(), writes=writes_summary(acknowledged=100, lost=None, outage_s=2.0))
    m = _measure(tmp_path, requests(60), data)
    assert m["writes_lost"] is None


def test_no_write_figures_without_a_writer(tmp_path):
    m = _measure(tmp_path, requests(60), session(_events()))
    assert not {"writes_acknowledged", "writes_lost", "write_outage_s"} & set(m)


def test_the_waits_seconds_become_figures_named_after_their_events(tmp_path):
    events = _events(
        event("new database primary", 27.5, {"leader": "pg-b", "seconds": 7.5}),
        event("old primary rejoined", 40, {"leader": "pg-b", "seconds": 20.0}),
        event("scaled out", 30, {"from": 3, "to": 6}),  # no seconds: no figure
    )
    m = _measure(tmp_path, requests(60), session(events))
    assert m["new database primary (s)"] == 7.5
    assert m["old primary rejoined (s)"] == 20.0
    assert "scaled out (s)" not in m
    assert [e["event"] for e in m["events"]] == [e["event"] for e in events]
