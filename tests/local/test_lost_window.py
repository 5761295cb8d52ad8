"""The RPO as a client sees it: the span of time whose acknowledged writes a recovery did not bring back."""

from __future__ import annotations

import pytest

from local.recorders import WriteAttempt, lost_window_s


def _attempts(acked_at: dict[int, float], failed: tuple[int, ...] = ()) -> list[WriteAttempt]:
    ok = [WriteAttempt(i, at, 1000 + at, 0.01, None) for i, at in acked_at.items()]
    return ok + [WriteAttempt(i, 99.0, 1099.0, 0.01, "OperationalError: gone") for i in failed]


def test_nothing_lost_is_no_window():
    assert lost_window_s(_attempts({1: 0.0, 2: 1.0}), []) == 0.0


def test_the_window_runs_from_the_last_kept_write_to_the_last_lost_one():
    attempts = _attempts({1: 0.0, 2: 1.0, 3: 2.0, 4: 3.5, 5: 4.0, 6: 9.0}, failed=(7, 8))
    # 4 and 5 were acknowledged and lost; 3 is the last the database kept before them; 6 came back later
    assert lost_window_s(attempts, [4, 5]) == pytest.approx(4.0 - 2.0)


def test_when_even_the_first_write_is_lost_the_window_starts_with_it():
    assert lost_window_s(_attempts({1: 5.0, 2: 6.0}), [1, 2]) == pytest.approx(1.0)
