"""The local stack: the production topology on one machine, from real servers.

``pynomaly-ops local up|status [--json]|down [--purge]|outputs --json|scale N``
(see :mod:`local.cli`). State lives in ``.local-stack/`` or ``--state-dir`` /
``$PYNOMALY_LOCAL_STATE``; ports move with ``$PYNOMALY_LOCAL_PORT_OFFSET`` or
``$PYNOMALY_LOCAL_PORT_<NAME>`` (names in :data:`local.layout.DEFAULT_PORTS`),
recorded at the first ``up``.

Every server belongs to a zone (a, b, c) with its own loopback address, so a
later mode can cut a whole zone off the way an AZ fails.
"""
