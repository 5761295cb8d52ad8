"""An instance refresh whose auto rollback goes back to the release that ran before.

The provider's own ``instance_refresh`` block updates the group's launch template version first and starts the
refresh after (hashicorp/terraform-provider-aws#34189): the "previous configuration" a failed refresh rolls back
to is then the new, broken template, and auto rollback is no rollback at all. Here the group's launch template is
set once, at creation, and never moved by Pulumi (``ignore_changes``); a new template version reaches the group
only through ``StartInstanceRefresh`` with a *desired configuration*. AWS updates the group when the refresh
succeeds; when it fails (instances that never turn healthy within the warm-up) it rolls the replaced instances
back and the group keeps the version it had. ``pulumi up`` waits for the outcome and fails if it was not a
success, naming the refresh and the version the group is back on.

The AWS calls (``start``, ``outcome``) take a boto3 Auto Scaling client, so they are tested against botocore's
Stubber; :class:`InstanceRefresh` is the Pulumi dynamic resource that runs them during ``pulumi up``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ResourceProvider, UpdateResult

TERMINAL_OK = {"Successful"}
TERMINAL_FAILED = {"Failed", "Cancelled", "RollbackSuccessful", "RollbackFailed"}
POLL_S = 15.0


class RefreshFailed(RuntimeError):
    """The refresh did not succeed; the group is on the version the message names."""


def preferences(warmup_s: int) -> dict[str, Any]:
    """Launch before terminating (never below capacity), and roll back on failure to the version before."""
    return {
        "MinHealthyPercentage": 100,
        "MaxHealthyPercentage": 200,
        "InstanceWarmup": warmup_s,
        "SkipMatching": True,  # instances already on the desired version are left alone
        "AutoRollback": True,
    }


def current_version(client: Any, group: str) -> tuple[str, str]:
    """The group's launch template (id, version) as AWS has it now."""
    (found,) = client.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"]
    template = found["LaunchTemplate"]
    return template["LaunchTemplateId"], str(template["Version"])


def start(client: Any, group: str, template_id: str, version: str, warmup_s: int) -> str | None:
    """Start a refresh to ``version`` (None when the group is already on it: nothing to replace)."""
    if current_version(client, group) == (template_id, version):
        return None
    desired = {"LaunchTemplate": {"LaunchTemplateId": template_id, "Version": version}}
    answer = client.start_instance_refresh(
        AutoScalingGroupName=group, Strategy="Rolling", DesiredConfiguration=desired, Preferences=preferences(warmup_s)
    )
    return str(answer["InstanceRefreshId"])


def outcome(
    client: Any,
    group: str,
    refresh_id: str,
    timeout_s: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Wait for the refresh to end; raise :class:`RefreshFailed` unless it succeeded."""
    deadline = clock() + timeout_s
    while True:
        (refresh,) = client.describe_instance_refreshes(AutoScalingGroupName=group, InstanceRefreshIds=[refresh_id])[
            "InstanceRefreshes"
        ]
        status = refresh["Status"]
        if status in TERMINAL_OK:
            return
        if status in TERMINAL_FAILED:
            template_id, version = current_version(client, group)
            raise RefreshFailed(
                f"instance refresh {refresh_id} of {group} ended {status}: {refresh.get('StatusReason', '')}; the "
                f"group is on launch template {template_id} version {version}"
            )
        if clock() > deadline:
            raise RefreshFailed(
                f"instance refresh {refresh_id} of {group} still {status} after {timeout_s:.0f}s; AWS goes on with "
                f"it: `aws autoscaling describe-instance-refreshes --auto-scaling-group-name {group}`"
            )
        sleep(POLL_S)


class _Provider(ResourceProvider):
    """Runs the refresh during ``pulumi up`` (boto3, with the credentials ``pulumi up`` runs with)."""

    def _refresh(self, props: dict[str, Any]) -> None:
        import boto3  # at deploy time only: the program's imports stay Pulumi and the SDKs

        client = boto3.client("autoscaling", region_name=props["region"])
        group, template_id, version = props["group"], props["template_id"], str(props["version"])
        refresh_id = start(client, group, template_id, version, int(props["warmup_s"]))
        if refresh_id is not None:
            outcome(client, group, refresh_id, float(props["timeout_s"]))

    def create(self, props: dict[str, Any]) -> CreateResult:
        self._refresh(props)
        return CreateResult(id_=f"{props['group']}-refresh", outs=props)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        keys = ("template_id", "version")
        changed = [k for k in keys if str(olds.get(k)) != str(news.get(k))]
        return DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        self._refresh(news)
        return UpdateResult(outs=news)


class InstanceRefresh(pulumi.dynamic.Resource):
    """Moves ``group`` to launch template ``template_id`` ``version`` by a refresh that can roll back."""

    def __init__(
        self,
        name: str,
        *,
        group: pulumi.Input[str],
        template_id: pulumi.Input[str],
        version: pulumi.Input[str],
        region: str,
        warmup_s: int,
        timeout_s: float,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "group": group,
            "template_id": template_id,
            "version": version,
            "region": region,
            "warmup_s": warmup_s,
            "timeout_s": timeout_s,
        }
        super().__init__(_Provider(), name, props, opts)
