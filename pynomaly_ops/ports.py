"""Ports the platform's services listen on, wherever they run (AWS and the pods; the local stack moves its
own by offset, local/layout.py)."""

from __future__ import annotations

POSTGRES = 5432
REDIS = 6379
WORKER_METRICS = 9102  # the worker's /metrics, scraped for the processing-lag alarm
