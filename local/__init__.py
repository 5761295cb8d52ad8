"""The local stack: the production topology on one machine, from real servers.

``pynomaly-ops local up|status|down|outputs|scale`` (see :mod:`local.cli`).
Every server belongs to a zone (a, b, c) with its own loopback address, so a
later mode can cut a whole zone off the way an AZ fails.
"""
