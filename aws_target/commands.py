"""Shell commands on the fleet's instances through SSM Run Command: the instances run the SSM agent (their role
has AmazonSSMManagedInstanceCore, infra/app_fleet.py) and no SSH port is open."""

from __future__ import annotations

from typing import Any

from aws_target import target as targets
from aws_target.target import Target
from pynomaly_ops.waiting import NotYet, wait_for

DOCUMENT = "AWS-RunShellScript"
# The queue consumer's systemd unit on the instances: infra/app_fleet.py's SERVICE_UNITS (tests/aws_target
# checks they are the same), from the AMI (deploy/systemd).
WORKER_UNIT = "pynomaly-worker.service"
SUCCESS = "Success"
UNFINISHED = ("Pending", "InProgress", "Delayed")
COMMENT_MAX = 100  # SendCommand's Comment


def run(t: Target, instance_ids: list[str], commands: list[str], comment: str, timeout_s: float) -> dict[str, Any]:
    """Run ``commands`` on every instance and wait for each to finish; returns the command's id and each
    instance's status (``Success``, ``Failed``...)."""
    ssm = t.client("ssm")
    command = ssm.send_command(
        InstanceIds=instance_ids,
        DocumentName=DOCUMENT,
        Parameters={"commands": commands},
        Comment=comment[:COMMENT_MAX],
    )["Command"]
    command_id = command["CommandId"]

    def finished() -> dict[str, str]:
        # An invocation does not exist for a moment after SendCommand: wait_for counts the error as "not yet".
        statuses = {i: ssm.get_command_invocation(CommandId=command_id, InstanceId=i)["Status"] for i in instance_ids}
        if running := sorted(i for i, s in statuses.items() if s in UNFINISHED):
            raise NotYet(f"still running on {', '.join(running)}")
        return statuses

    what = f"`{' && '.join(commands)}` on {len(instance_ids)} instances (command {command_id})"
    statuses = wait_for(what, finished, timeout_s, interval_s=targets.POLL_INTERVAL_S)
    return {"command_id": command_id, "statuses": statuses}
