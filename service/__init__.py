"""The reference Pynomaly service: an anomaly-detection API and its batch worker.

It depends on the same things as the production deployment (PostgreSQL, Redis,
a queue and object storage), so the drills and load tests can exercise it on
one machine. Configured only through ``PYNOMALY_*`` environment variables
(see :mod:`service.config`).
"""
