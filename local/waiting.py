"""Deadline-bounded polling: the one way the local stack waits for state (the core's, pynomaly_ops.waiting)."""

from pynomaly_ops.waiting import NotYet, Timeout, wait_for

__all__ = ["NotYet", "Timeout", "wait_for"]
