"""The default detector for a series: how far each point departs from its own local pattern, in robust
standard deviations.

A time series' anomalies are departures from what the neighbouring points say the value should be, not
rare values: a spike inside a random walk's range, or an off-beat value in a repeating pattern, is an
ordinary value seen without its order. So each point gets a *baseline* from its neighbours (never from
itself), and its score is ``|x - baseline| / sigma``, where ``sigma`` is 1.4826 x the median absolute
deviation of all residuals (the robust estimate of their standard deviation: outliers cannot inflate it).
This is the Hampel identifier generalised with a seasonal baseline, as in Twitter's S-H-ESD.

Several baselines are tried and the one whose residuals are smallest (lowest ``sigma``) wins, so the
series says which structure it has, without a tuned test for seasonality:

- local(w): the median of the means of the pairs of points 1 to (w - 1) / 2 either side (noise, trends,
  level shifts, random walks);
- seasonal(p): the median of the same-phase pair means up to ``SEASONS`` periods either side, for the
  periods the autocorrelation peaks at (repeating patterns, daily and weekly cycles), alone or followed
  by a local baseline on what it leaves.

A point is flagged when its score exceeds the threshold (service/detector.py). Pure numpy, O(n x w):
3 to 9 ms for 1,000 points (benchmarks/detection_quality.py reports it per family).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

LOCAL_WINDOWS = (3, 5, 7, 11, 25)  # points, odd: the point itself and (w - 1) / 2 neighbours on each side
SEASONAL_THEN_LOCAL = (7, 25)  # windows tried on what a seasonal baseline leaves
SEASONS = 3  # same-phase neighbours each side for a seasonal baseline
MIN_PERIOD = 2
MIN_CYCLES = 4  # a period is tried only when the series holds this many cycles
MAX_SCORE = 1e12  # a departure from an exact pattern can be any multiple of a tiny sigma: kept finite for JSON
MAD_TO_SIGMA = 1.4826  # MAD x this = sigma for Gaussian data
MEAN_AD_TO_SIGMA = 1.2533  # mean absolute deviation x this = sigma, when most residuals are exactly zero
MIN_ACF = 0.2  # a weaker peak is noise, not a pattern
CLIP_Z = 5.0  # values beyond this are clipped before the autocorrelation, so outliers cannot set the period


@dataclass(frozen=True)
class Fit:
    scores: np.ndarray  # robust z of each point's residual
    sigma: float
    baseline: str  # "local(11)", "seasonal(7)+local(11)": which structure explained the series best


def score(x: np.ndarray) -> Fit:
    """Score a 1-D float array (any length >= 1)."""
    detrended = _detrended(x)  # a slope would bias the baselines at the ends, where one side is missing
    candidates = [_local(detrended, w) for w in LOCAL_WINDOWS]
    for period in candidate_periods(detrended):
        seasonal = detrended - _median(_same_phase(detrended, period))
        label = f"seasonal({period})"
        candidates += [_scored(seasonal, label), *(_local(seasonal, w, f"{label}+") for w in SEASONAL_THEN_LOCAL)]
    return min(candidates, key=lambda fit: fit.sigma)


def _scored(residual: np.ndarray, baseline: str, nearest: np.ndarray | None = None) -> Fit:
    """Robust z-scores: sigma from ``residual``; each point's departure from ``nearest`` if given."""
    sigma = robust_sigma(residual)
    if sigma == 0.0:  # every residual is zero: nothing departs from the pattern
        return Fit(np.zeros_like(residual), 0.0, baseline)
    departure = np.abs(residual - np.median(residual))
    if nearest is not None:
        departure = np.minimum(departure, nearest)
    with np.errstate(over="ignore"):
        return Fit(np.minimum(departure / sigma, MAX_SCORE), sigma, baseline)


def _local(x: np.ndarray, w: int, prefix: str = "") -> Fit:
    """Scores against the local median of ``w`` points.

    The point itself is left out of its baseline, or on a steep stretch it would be its own median; the
    baseline is the median of the means of the pairs of points 1, 2, ... either side, which cancels a
    local slope. Sigma comes from those residuals; a point's score from whichever of that baseline, the
    median before it or the median after it is nearest, so the first and last points of a level shift do
    not look half a shift away. An outlier is far from all three."""
    before, after = _neighbours(x, w)
    centred = x - np.median((before[:, ::-1] + after) / 2, axis=1)
    one_sided = np.minimum(np.abs(x - np.median(before, axis=1)), np.abs(x - np.median(after, axis=1)))
    return _scored(centred, f"{prefix}local({w})", nearest=one_sided)


def robust_sigma(residual: np.ndarray) -> float:
    """1.4826 x MAD; where more than half the residuals are identical (an exact pattern) MAD is 0, and the
    mean absolute deviation takes over so that the few departures still stand out."""
    centred = np.abs(residual - np.median(residual))
    mad = float(np.median(centred))
    if mad > 0.0:
        return MAD_TO_SIGMA * mad
    mean_ad = float(centred.mean())
    scale = float(np.abs(residual).max(initial=0.0))
    return MEAN_AD_TO_SIGMA * mean_ad if mean_ad > 1e-12 * max(scale, 1e-300) else 0.0


def _neighbours(x: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``(w - 1) / 2`` points before and after each point; the ends reflect the series."""
    half = min(w // 2, len(x) - 1)
    if half < 1:
        return np.repeat(x[:, None], 1, axis=1), np.repeat(x[:, None], 1, axis=1)
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(x, half, mode="reflect"), 2 * half + 1)
    return windows[:, :half], windows[:, half + 1 :]


def _same_phase(x: np.ndarray, period: int) -> np.ndarray:
    """Each point's same-phase neighbours k = 1 to ``SEASONS`` periods away: the mean of the pair either
    side (it cancels a trend across cycles), or the one there is near an end; NaN where there is none."""
    n = len(x)
    pad = np.full(SEASONS * period, np.nan)
    padded = np.concatenate([pad, x, pad])
    centre = SEASONS * period + np.arange(n)
    columns = []
    for k in range(1, SEASONS + 1):
        before, after = padded[centre - k * period], padded[centre + k * period]
        pair = (before + after) / 2
        columns.append(np.where(np.isnan(before), after, np.where(np.isnan(after), before, pair)))
    return np.stack(columns, axis=1)


def _median(values: np.ndarray) -> np.ndarray:
    """Row medians, ignoring NaN (a row holds at least one number: the series has ``MIN_CYCLES`` periods)."""
    if not np.isnan(values).any():
        return np.median(values, axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(values, axis=1)


def _detrended(x: np.ndarray) -> np.ndarray:
    """Less a resistant line (through the medians of the two halves): a trend would bias a baseline taken
    from cycles on one side only, and a least-squares line would tilt towards a large outlier."""
    n = len(x)
    if n < 4:
        return x
    half = n // 2
    slope = (np.median(x[n - half :]) - np.median(x[:half])) / (n - half)
    line = slope * np.arange(n)
    return x - line - np.median(x - line)


def candidate_periods(y: np.ndarray) -> list[int]:
    """The lengths, in points, of the patterns a detrended series may repeat: from the peaks of the
    autocorrelation of the outlier-clipped series, the highest and the shortest close to it (a daily cycle
    peaks at 24 samples and, with quieter weekends, higher at 168); none when the series is too short for
    ``MIN_CYCLES`` periods or has no peak above ``MIN_ACF``."""
    n = len(y)
    max_lag = n // MIN_CYCLES
    if max_lag < MIN_PERIOD + 1:
        return []
    spread = MAD_TO_SIGMA * float(np.median(np.abs(y - np.median(y)))) or float(np.std(y))
    if spread == 0.0:
        return []
    y = np.clip(y - np.median(y), -CLIP_Z * spread, CLIP_Z * spread)
    y -= y.mean()
    size = 1 << (2 * n - 1).bit_length()
    spectrum = np.fft.rfft(y, size)
    acf = np.fft.irfft(spectrum * np.conj(spectrum), size)[: max_lag + 2]
    if acf[0] <= 0.0:
        return []
    acf = acf / acf[0] * n / (n - np.arange(len(acf)))  # unbiased: a long lag overlaps fewer points
    lags = np.arange(MIN_PERIOD, max_lag + 1)
    peaks = lags[(acf[lags] > acf[lags - 1]) & (acf[lags] >= acf[lags + 1]) & (acf[lags] > MIN_ACF)]
    if not len(peaks):
        return []
    highest = int(peaks[np.argmax(acf[peaks])])
    shortest = int(peaks[acf[peaks] >= 0.9 * acf[highest]][0])
    return sorted({shortest, highest})
