"""Shared by every suite: tests/ on sys.path, so each imports the real-server
helpers as ``servers`` (tests/servers.py) however pytest was started."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
