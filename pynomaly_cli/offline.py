"""Run the Pulumi program offline, under Pulumi's own mocks.

No CLI, no credentials, no cloud: the real program in ``infra/`` runs the way
the Python language host runs it (its ``__main__.py``, working directory the
program directory) against :class:`pulumi.runtime.Mocks` that record every
resource with its inputs. ``pynomaly-ops plan`` and ``render-k8s`` and the
tests all read that record. It is a rendering of what the program declares,
not a cloud preview: computed values (ids, ARNs, endpoints) are made up.

The run happens in a child process (``python -m pynomaly_cli.offline``) so
each stack starts from a clean Pulumi runtime.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import runpy
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pynomaly_ops import REPO_ROOT

PROGRAM_DIR = REPO_ROOT / "infra"
ACCOUNT = "123456789012"
SECRET = "$secret"  # how a secret input is marked in the record

# Settings a user sets with `pulumi config set` before a real `pulumi up`
# (they name account-specific things). Offline runs fill them in when the
# stack file leaves them unset, and say so.
PLACEHOLDERS = {
    "pynomaly:lb.certificate_arn": f"arn:aws:acm:us-east-1:{ACCOUNT}:certificate/00000000-offline-placeholder",
    "pynomaly:fleet.ami_id": "ami-0000offline0000",
    # Rendered as from a runner inside the VPC: the private endpoint, the stacks' secure default.
    "pynomaly:cluster.runner_in_vpc": True,
}


class OfflineError(RuntimeError):
    """The program failed under mocks; the message is the program's own error."""


@dataclass(frozen=True)
class Resource:
    urn: str
    type: str
    name: str
    parent: str | None
    custom: bool
    inputs: dict[str, Any]
    state: dict[str, Any]
    provider: str | None = None  # "<provider urn>::<id>" when the resource names an explicit provider
    dependencies: list[str] = field(default_factory=list)  # URNs it waits for (inputs' resources and depends_on)
    # The URNs each input property takes values from (engine names): which bucket a bucket policy is for.
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)
    ignore_changes: list[str] = field(default_factory=list)  # input properties `pulumi up` leaves as they are

    @property
    def plain_inputs(self) -> dict[str, Any]:
        return unwrap_secrets(self.inputs)


@dataclass
class Rendering:
    stack: str
    resources: list[Resource]
    outputs: dict[str, Any]
    placeholders: list[str] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)  # provider functions invoked: {"token", "args"}

    def of_type(self, type_token: str) -> list[Resource]:
        return [r for r in self.resources if r.type == type_token]

    def named(self, name: str) -> Resource:
        matches = [r for r in self.resources if r.name == name]
        if len(matches) != 1:
            raise KeyError(f"{len(matches)} resources named {name!r}")
        return matches[0]

    def children(self, urn: str) -> list[Resource]:
        return [r for r in self.resources if r.parent == urn]


def unwrap_secrets(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {SECRET}:
            return unwrap_secrets(value[SECRET])
        return {k: unwrap_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap_secrets(v) for v in value]
    return value


def offline_config(stack: str, overrides: dict[str, Any] | None = None) -> tuple[dict[str, str], list[str], list[str]]:
    """The configuration an offline run hands the program, as Pulumi would: every value a string (JSON for the
    rest), secrets replaced by a made-up value. Returns it with the secret keys and the placeholders used."""
    from pynomaly_ops import settings as stack_settings

    overrides = overrides or {}
    raw = stack_settings.read_stack_config(stack)
    placeholders = [k for k in PLACEHOLDERS if k not in raw and k not in overrides]
    config = {**{k: PLACEHOLDERS[k] for k in placeholders}, **raw, **overrides}
    secret_keys = [k for k, v in config.items() if isinstance(v, dict) and "secure" in v]
    flat = {
        k: (f"offline-secret-{k}" if k in secret_keys else v if isinstance(v, str) else json.dumps(v))
        for k, v in config.items()
    }
    return flat, secret_keys, placeholders


# ---------------------------------------------------------------------------
# Parent side: start the child, read its record.


def render(
    stack: str, overrides: dict[str, Any] | None = None, timeout: float = 300, env: dict[str, str] | None = None
) -> Rendering:
    """Run the program for ``stack`` under mocks and return what it declared.

    ``overrides`` are ``namespace:key`` config values laid over the stack file
    (the way ``pulumi config set`` would), for tests of bad configurations.
    ``env`` adds environment variables for this run only (e.g. PYNOMALY_BASELINES).
    """
    if importlib.util.find_spec("pulumi_aws") is None:  # an install for the service only (image, AMI)
        raise OfflineError("the Pulumi SDKs are not installed here: pip install -e '.[platform]'")
    proc = subprocess.run(
        [sys.executable, "-m", "pynomaly_cli.offline", "--stack", stack],
        input=json.dumps(overrides or {}),
        capture_output=True,
        text=True,
        cwd=PROGRAM_DIR,
        timeout=timeout,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}, **(env or {})},
    )
    if proc.returncode != 0:
        raise OfflineError(_error_text(proc.stderr))
    record = json.loads(proc.stdout)
    return Rendering(
        stack=stack,
        resources=[Resource(**r) for r in record["resources"]],
        outputs=record["outputs"],
        placeholders=record["placeholders"],
        calls=record.get("calls", []),
    )


def _error_text(stderr: str) -> str:
    marker = "OFFLINE-ERROR: "
    for line in stderr.splitlines():
        if line.startswith(marker):
            return json.loads(line[len(marker) :])
    return stderr.strip()[-4000:]


# ---------------------------------------------------------------------------
# Child side: mocks and the program run.


def _mark_secrets(value: Any) -> Any:
    from pulumi.runtime import rpc

    if rpc.is_rpc_secret(value):
        return {SECRET: _mark_secrets(value["value"])}
    if isinstance(value, dict):
        return {k: _mark_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mark_secrets(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    # Resource references, assets and unknowns are recorded by their text.
    return str(value)


def _computed(type_token: str, name: str, inputs: dict[str, Any], region: str) -> dict[str, Any]:
    """Made-up values for what the cloud would compute, shaped like the real ones."""
    plain = unwrap_secrets(inputs)
    service = type_token.split(":")[1].split("/")[0]
    resource_name = plain.get("name") or name
    state: dict[str, Any] = {
        "arn": f"arn:aws:{service}:{region}:{ACCOUNT}:{resource_name}",
        "name": resource_name,
    }
    host = f"{resource_name}.offline.{region}"
    extra: dict[str, dict[str, Any]] = {
        "aws:rds/instance:Instance": {
            "address": f"{host}.rds.amazonaws.com",
            "endpoint": f"{host}.rds.amazonaws.com:5432",
            "port": 5432,
            "identifier": plain.get("identifier", resource_name),
            "resourceId": f"db-{resource_name}",
            "masterUserSecrets": [
                {"secretArn": f"arn:aws:secretsmanager:{region}:{ACCOUNT}:secret:rds!{resource_name}"}
            ],
        },
        "aws:elasticache/replicationGroup:ReplicationGroup": {
            "primaryEndpointAddress": f"master.{host}.cache.amazonaws.com",
            "readerEndpointAddress": f"replica.{host}.cache.amazonaws.com",
        },
        "aws:sqs/queue:Queue": {
            "url": f"https://sqs.{region}.amazonaws.com/{ACCOUNT}/{resource_name}",
            "arn": f"arn:aws:sqs:{region}:{ACCOUNT}:{resource_name}",
        },
        "aws:s3/bucket:Bucket": {
            "bucket": plain.get("bucket") or resource_name,
            "arn": f"arn:aws:s3:::{plain.get('bucket') or resource_name}",
            "bucketRegionalDomainName": f"{resource_name}.s3.{region}.amazonaws.com",
        },
        # an address of TEST-NET-3 (RFC 5737), one per EIP: never anybody's
        "aws:ec2/eip:Eip": {"publicIp": f"203.0.113.{zlib.crc32(name.encode()) % 254 + 1}"},
        "aws:lb/loadBalancer:LoadBalancer": {
            "dnsName": f"{resource_name}.{region}.elb.amazonaws.com",
            "arnSuffix": f"app/{resource_name}/0123456789abcdef",
            "zoneId": "Z35SXDOTRQ7X7K",
        },
        "aws:secretsmanager/secret:Secret": {
            "arn": f"arn:aws:secretsmanager:{region}:{ACCOUNT}:secret:{resource_name}-Offln1"
        },
        "aws:lb/targetGroup:TargetGroup": {"arnSuffix": f"targetgroup/{resource_name}/0123456789abcdef"},
        "aws:kms/key:Key": {"keyId": f"key-{name}", "arn": f"arn:aws:kms:{region}:{ACCOUNT}:key/key-{name}"},
        "aws:cloudwatch/logGroup:LogGroup": {"arn": f"arn:aws:logs:{region}:{ACCOUNT}:log-group:{resource_name}"},
        "aws:iam/role:Role": {"arn": f"arn:aws:iam::{ACCOUNT}:role/{resource_name}"},
        "aws:iam/instanceProfile:InstanceProfile": {"arn": f"arn:aws:iam::{ACCOUNT}:instance-profile/{resource_name}"},
        "aws:ec2/launchTemplate:LaunchTemplate": {"latestVersion": 1},
        "aws:eks/cluster:Cluster": {
            "endpoint": f"https://{resource_name}.gr7.{region}.eks.amazonaws.com",
            "certificateAuthority": {"data": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="},
            "identities": [{"oidcs": [{"issuer": f"https://oidc.eks.{region}.amazonaws.com/id/OFFLINE"}]}],
        },
        "aws:ec2/vpc:Vpc": {"cidrBlock": plain.get("cidrBlock")},
        # The SDK marks `result` secret itself (additional_secret_outputs).
        "random:index/randomPassword:RandomPassword": {"result": f"offline-random-{name}"},
    }
    state.update(extra.get(type_token, {}))
    return state


OFFLINE_ZONE_NUMBERS = (4, 6, 1, 2, 3, 5)  # us-east-1a is use1-az4 in this account, ..., us-east-1e use1-az3


def _zone_prefix(region: str) -> str:
    """us-east-1 -> use1, eu-central-1 -> euc1: the form of AZ IDs."""
    area, direction, number = region.split("-")
    return f"{area}{direction[0]}{number}"


def _call(token: str, args: dict[str, Any], region: str) -> dict[str, Any]:
    results: dict[str, Callable[[], dict[str, Any]]] = {
        # As in a real account, names map to zone IDs in no particular order, and one ID holds no EKS.
        "aws:index/getAvailabilityZones:getAvailabilityZones": lambda: {
            "names": [f"{region}{z}" for z in "abcdef"],
            "zoneIds": [f"{_zone_prefix(region)}-az{i}" for i in OFFLINE_ZONE_NUMBERS],
            "state": "available",
        },
        "aws:index/getCallerIdentity:getCallerIdentity": lambda: {
            "accountId": ACCOUNT,
            "arn": f"arn:aws:iam::{ACCOUNT}:user/offline",
            "userId": "OFFLINE",
        },
        "aws:index/getRegion:getRegion": lambda: {"name": region, "region": region, "id": region},
        "aws:index/getPartition:getPartition": lambda: {"partition": "aws", "dnsSuffix": "amazonaws.com"},
        # The regional ELB account (us-east-1's) that writes ALB access logs in older regions.
        "aws:elb/getServiceAccount:getServiceAccount": lambda: {
            "arn": "arn:aws:iam::127311923021:root",
            "id": "127311923021",
            "region": region,
        },
    }
    if token not in results:
        raise NotImplementedError(
            f"offline rendering has no mock for the call {token}; add it to pynomaly_cli/offline.py"
        )
    return results[token]()


def _run_child(stack: str, overrides: dict[str, Any]) -> dict[str, Any]:
    import pulumi
    from pulumi.runtime import mocks, rpc
    from pulumi.runtime import settings as pulumi_settings
    from pulumi.runtime.stack import Stack, run_pulumi_func

    flat, secret_keys, placeholders = offline_config(stack, overrides)
    region = flat.get("aws:region", "us-east-1")

    records: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []

    class Recorder(mocks.Mocks):
        def new_resource(self, args: mocks.MockResourceArgs):
            if not args.custom:
                return f"{args.name}-id", {}
            state = {**args.inputs, **_computed(args.typ, args.name, args.inputs, region)}
            return f"{args.name}-id", state

        def call(self, args: mocks.MockCallArgs):
            calls.append({"token": args.token, "args": _jsonable(dict(args.args))})
            return _call(args.token, args.args, region), []  # (result, check failures)

    class Monitor(mocks.MockMonitor):
        def RegisterResource(self, request):
            response = super().RegisterResource(request)
            if request.type != "pulumi:pulumi:Stack":
                registration = self.resources[response.urn]
                records.append(
                    {
                        "urn": response.urn,
                        "type": request.type,
                        "name": request.name,
                        "parent": request.parent or None,
                        "provider": request.provider or None,
                        "dependencies": list(request.dependencies),
                        "property_dependencies": {k: list(v.urns) for k, v in request.propertyDependencies.items()},
                        "ignore_changes": list(request.ignoreChanges),
                        "custom": bool(request.custom),
                        "inputs": _jsonable(_mark_secrets(rpc.deserialize_properties(request.object))),
                        "state": _jsonable(_mark_secrets(registration.state)),
                    }
                )
            return response

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    recorder = Recorder()
    pulumi.runtime.set_all_config(flat, secret_keys)
    mocks.set_mocks(recorder, project="pynomaly", stack=stack, preview=False, monitor=Monitor(recorder))

    def program():
        runpy.run_path(str(Path.cwd()), run_name="__main__")

    # Our own event loop, set before anything of Pulumi's asks for one: the same loop then runs the
    # program and resolves its outputs (Pulumi's private _sync_await does no more than this).
    loop.run_until_complete(run_pulumi_func(program))
    root = pulumi_settings.get_root_resource()
    if not isinstance(root, Stack):
        raise RuntimeError(f"the program's root resource is {root!r}, not the Pulumi stack")

    async def resolve_outputs():
        resolved = {}
        for key, value in root.outputs.items():
            out = pulumi.Output.from_input(value)
            resolved[key] = await out.future(with_unknowns=True)
            if await out.is_secret():
                resolved[key] = {SECRET: resolved[key]}
        return resolved

    outputs = loop.run_until_complete(resolve_outputs())
    loop.close()
    return {"resources": records, "outputs": _jsonable(outputs), "placeholders": placeholders, "calls": calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stack", required=True)
    args = parser.parse_args()
    overrides = json.loads(sys.stdin.read() or "{}")
    try:
        record = _run_child(args.stack, overrides)
    except Exception as exc:
        message = (
            str(exc) if type(exc).__name__ in ("SettingsError", "BaselinesError") else f"{type(exc).__name__}: {exc}"
        )
        import traceback

        traceback.print_exc()
        print("OFFLINE-ERROR: " + json.dumps(message), file=sys.stderr)
        sys.exit(1)
    json.dump(record, sys.stdout)


if __name__ == "__main__":
    main()
