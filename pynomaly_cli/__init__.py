"""The ``pynomaly-ops`` command line and the offline rendering of the Pulumi program.

The top layer: it may import every part (core, infra, local, drills, load tests); nothing imports it.
"""
