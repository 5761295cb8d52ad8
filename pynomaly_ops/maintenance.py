"""Maintenance mode on AWS (002 "Redirect traffic to maintenance page"): the fixed response the HTTPS listener
answers every request with, instead of forwarding to the fleet.

infra/load_balancer.py declares it as the listener's default action when ``lb.maintenance_mode`` is set, and
the AWS fault library
(aws_target/) switches the same default action at run time, so a drill shows what the setting would.
"""

from __future__ import annotations

PAGE = (
    "<!doctype html><html><head><title>Pynomaly maintenance</title></head><body>"
    "<h1>Pynomaly is down for maintenance</h1><p>We will be back shortly.</p></body></html>"
)
CONTENT_TYPE = "text/html"
STATUS_CODE = "503"
