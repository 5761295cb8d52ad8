"""The split-brain probe: a client inside a cut zone that keeps writing straight to its zone's database member.

Started by ``local.faults.partition_zone`` inside the zone's network namespace, before the cut, while that
member is still the primary: ``python -m local.split_brain --dsn ... --table ... --out attempts.jsonl``
(the password in ``PGPASSWORD``). It writes until SIGTERM or its cap, then records every attempt as a JSON
line; ``local.faults.stop_split_brain_writes`` counts what it wrote after the cut that was acknowledged, and
what of it survives on the healed cluster.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from local.recorders import RecorderError, WriteRecorder, write_jsonl

READY_SUFFIX = ".ready"
ACKNOWLEDGED_BEFORE_READY = 5  # writes that went through before the cut: the probe really reaches the primary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.split_brain", description=__doc__)
    parser.add_argument("--dsn", required=True, help="libpq conninfo of the zone's own member (no password)")
    parser.add_argument("--table", required=True)
    parser.add_argument("--out", required=True, type=Path, help="every attempt, as JSON lines, on exit")
    parser.add_argument("--rate", type=float, default=50.0, help="writes per second")
    parser.add_argument("--max-duration", type=float, default=900.0, help="stop after this many seconds anyway")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    recorder = WriteRecorder(args.dsn, args.table, args.rate, max_duration_s=args.max_duration).start()
    try:
        recorder.wait_for_acknowledged(ACKNOWLEDGED_BEFORE_READY, 30)
        Path(str(args.out) + READY_SUFFIX).write_text("ready\n")
        stop.wait(args.max_duration)
    finally:
        try:
            recorder.stop()
        except RecorderError as exc:  # a write hanging at the end is one more unacknowledged write
            print(f"split-brain writer: {exc}", file=sys.stderr, flush=True)
        write_jsonl(args.out, (a.as_dict() for a in recorder.attempts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
