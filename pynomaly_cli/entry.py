"""The ``pynomaly-ops`` console script.

The command modules read the numbers file and the stack settings as they
load, so a mistake in either is caught here, around the import as well as
the run, and reported as one line naming the file and the key instead of a
traceback.
"""

from __future__ import annotations

import sys


def main() -> None:
    from pynomaly_ops.baselines import BaselinesError
    from pynomaly_ops.settings import SettingsError

    try:
        from pynomaly_cli.cli import app

        app()
    except (BaselinesError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except ModuleNotFoundError as exc:  # an install for the service only (the app image, the AMI)
        print(
            f"error: the command line needs the Python package {exc.name!r}, which this install lacks: "
            "pip install -e '.[local,platform]' (or '.[dev]')",
            file=sys.stderr,
        )
        sys.exit(2)


if __name__ == "__main__":
    main()
