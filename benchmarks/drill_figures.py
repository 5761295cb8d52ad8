"""Drill figures for the README: the monthly suite's wall time, and the database-failover RTO over N runs.

    .venv/bin/python benchmarks/drill_figures.py --failovers 5 [--suite]

Runs against the local stack of ``$PYNOMALY_LOCAL_STATE`` (default .local-stack/), bringing it up if it is
down (and down again afterwards), and prints one line per run and a summary as JSON on the last line.
Traffic goes to loopback only, at the drills' bounded rate.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from drills import catalog, runner


def _say(message: str) -> None:
    print(f"  {message}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--failovers", type=int, default=5, help="database-failover runs (default 5)")
    parser.add_argument("--suite", action="store_true", help="also time `drill run --all` once")
    parser.add_argument("--reports", type=Path, default=Path("reports/benchmarks"))
    args = parser.parse_args()
    figures: dict[str, object] = {}
    if args.suite:
        started = time.monotonic()
        outcomes = runner.run(list(catalog.DRILLS), _say, None, args.reports)
        figures["suite_s"] = round(time.monotonic() - started, 1)
        figures["suite_passed"] = {o.drill: o.passed for o in outcomes}
    rtos, lost, passed = [], [], []
    # One run of N drills, so the runner lets each failover's alarms clear before the next pre-check.
    outcomes = runner.run([catalog.get("database-failover")] * args.failovers, _say, None, args.reports)
    for i, outcome in enumerate(outcomes):
        m = outcome.summary["measurements"] or {}
        rtos.append(m.get("write_outage_s"))
        lost.append(m.get("writes_lost"))
        passed.append(outcome.passed)
        verdict = "PASS" if outcome.passed else "FAIL"
        rto, lost_now, acked = m.get("write_outage_s"), m.get("writes_lost"), m.get("writes_acknowledged")
        print(f"failover {i + 1}: RTO {rto} s, lost {lost_now}, acknowledged {acked}, {verdict}", flush=True)
    measured = [r for r in rtos if r is not None]
    if measured:
        figures |= {
            "failover_rto_s": rtos,
            "failover_rto_median_s": round(statistics.median(measured), 2),
            "failover_rto_spread": round(max(measured) / min(measured), 2) if min(measured) > 0 else None,
            "failover_writes_lost": lost,
            "failover_passed": passed,
        }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
