"""The detector's default flags mean something: the examples of issue 17, edge cases, the options, and a small
sample of the detection-quality benchmark held to its targets (pure: no servers)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from service import residual
from service.detector import DEFAULT_THRESHOLDS, FOREST, RESIDUAL, detect
from service.schemas import DetectRequest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import detection_quality


def defaults(series: list[float]) -> dict:
    return detect(series, DetectRequest(series=series).resolved_options(5))


def flagged(result: dict) -> list[int]:
    return [i for i, f in enumerate(result["flags"]) if f]


def test_a_repeating_pattern_with_one_spike_flags_the_spike_only():
    # issue 17: 300 points of a 7-step pattern, one point at 50x: 172 of 300 were flagged
    series = [float([3, 5, 4, 8, 2, 6, 7][i % 7]) for i in range(300)]
    series[150] *= 50
    result = defaults(series)
    assert flagged(result) == [150]
    assert result["method"] == RESIDUAL and result["model"].startswith("seasonal(7)")


def test_gaussian_noise_with_three_8_sigma_outliers_flags_those_three():
    rng = np.random.default_rng(0)
    series = rng.normal(100, 5, 1000)
    series[[100, 500, 900]] += 40  # +8 sigma: 331 of 1,000 were flagged
    result = defaults(series.tolist())
    assert {100, 500, 900} <= set(flagged(result)) and result["n_flagged"] <= 5  # noise may pass 4 sigma


def test_a_noisy_sine_with_three_outliers_flags_those_three():
    rng = np.random.default_rng(1)
    t = np.arange(1000)
    series = 50 + 20 * np.sin(2 * np.pi * t / 50) + rng.normal(0, 2, 1000)
    series[[123, 456, 789]] += [16, -16, 20]  # 8 to 10 sigma: 520 of 1,000 were flagged
    result = defaults(series.tolist())
    assert {123, 456, 789} <= set(flagged(result)) and result["n_flagged"] <= 5


def test_a_level_shift_alone_is_not_an_anomaly():
    series = [10.0 + (i % 3) * 0.1 for i in range(200)] + [40.0 + (i % 3) * 0.1 for i in range(200)]
    assert flagged(defaults(series)) == []


COUNTER = np.cumsum(np.random.default_rng(4).integers(5, 15, 300)).tolist()  # a drifting counter


@pytest.mark.parametrize("series", [[5.0], [5.0, 5.0], [1.0, 2.0], [3.0] * 500, list(np.arange(100.0)), COUNTER])
def test_trivial_series_have_nothing_to_flag(series):
    result = defaults(series)
    assert result["n_flagged"] == 0 and len(result["scores"]) == len(series)
    assert all(np.isfinite(result["scores"]))


def test_an_exact_pattern_has_a_zero_mad_and_still_scores_a_departure():
    series = [float(i % 4) for i in range(400)]
    series[201] += 0.5  # small, but the only departure from an exact pattern
    assert residual.robust_sigma(np.zeros(10)) == 0.0
    assert flagged(defaults(series)) == [201]


def test_the_threshold_and_contamination_options_set_the_cut():
    rng = np.random.default_rng(2)
    series = rng.normal(0, 1, 1000).tolist()
    loose = detect(series, DetectRequest(series=series, threshold=2.0).resolved_options(5))
    assert loose["threshold"] == 2.0 and 20 < loose["n_flagged"] < 80  # 4.6 % of Gaussian points pass 2 sigma
    share = detect(series, DetectRequest(series=series, contamination=0.05).resolved_options(5))
    assert share["n_flagged"] == 50  # exactly the top 5 %
    assert min(s for s, f in zip(share["scores"], share["flags"], strict=True) if f) > share["threshold"]


def test_the_forest_remains_for_rows_and_on_request():
    rng = np.random.default_rng(3)
    rows = rng.normal(0, 1, (300, 3)).tolist()
    rows[42] = [15.0, -15.0, 15.0]
    result = detect(rows, DetectRequest(rows=rows).resolved_options(5))
    assert result["method"] == FOREST and result["threshold"] == DEFAULT_THRESHOLDS[FOREST]
    assert 42 in flagged(result) and result["n_flagged"] <= 3  # sklearn's own 0.5 cut flagged about a third
    series = [r[0] for r in rows]
    asked = DetectRequest(series=series, method="isolation_forest", n_estimators=9).resolved_options(5)
    assert asked == {"method": FOREST, "contamination": "auto", "threshold": None, "n_estimators": 9}
    assert detect(series, asked)["model"] == "9 trees"
    assert DetectRequest(series=series, n_estimators=9).resolved_options(5) == asked  # asking for trees: the forest


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"series": [1.0, 2.0], "threshold": 3, "contamination": 0.1}, "either 'threshold'"),
        ({"rows": [[1.0], [2.0]], "method": "residual"}, "scores a series"),
        ({"series": [1.0, 2.0], "method": "residual", "n_estimators": 9}, "'n_estimators' is for method"),
        ({"series": [1.0, 2.0], "method": "lof"}, "method"),
        ({"series": [1.0, 2.0], "threshold": 0}, "threshold"),
    ],
)
def test_inconsistent_options_are_refused_with_the_fix(fields, named):
    with pytest.raises(ValidationError, match=named):
        DetectRequest(**fields)


def test_the_quality_benchmark_meets_its_targets_on_a_small_sample(capsys):
    assert detection_quality.main(["--series", "20", "--seed", "5"]) == 0, capsys.readouterr().out
