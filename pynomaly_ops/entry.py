"""The ``pynomaly-ops`` console script.

The command modules read the numbers file and the stack settings as they
load, so a mistake in either is caught here, around the import as well as
the run, and reported as one line naming the file and the key instead of a
traceback.
"""

from __future__ import annotations

import sys


def main() -> None:
    from infra.settings import SettingsError
    from pynomaly_ops.baselines import BaselinesError

    try:
        from pynomaly_ops.cli import app

        app()
    except (BaselinesError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
