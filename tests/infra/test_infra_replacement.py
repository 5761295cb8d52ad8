"""Resources a stack-file or code change can replace carry no fixed physical name.

Pulumi creates a replacement before deleting the original; AWS refuses a second
target group, security group or DB parameter group of the same name, so with a
fixed name `pulumi up` fails halfway through the replacement.
"""

from __future__ import annotations

from infra_helpers import inputs

# (type token, what replaces it)
REPLACEABLE = {
    "aws:ec2/securityGroup:SecurityGroup": "a new description or VPC",
    "aws:lb/targetGroup:TargetGroup": "a new fleet.app_port, protocol or VPC",
    "aws:rds/parameterGroup:ParameterGroup": "a new family, i.e. a new db.engine_version major",
}


def test_replaceable_resources_are_auto_named(r):
    fixed = [
        f"{x.name} ({REPLACEABLE[x.type]} replaces it)"
        for x in r.resources
        if x.type in REPLACEABLE and x.plain_inputs.get("name")
    ]
    assert not fixed, f"fixed names would block replacement: {fixed}"


def test_changing_the_postgres_major_version_is_an_upgrade_rds_accepts(r, stack):
    assert inputs(r, f"{stack}-database-primary")["allowMajorVersionUpgrade"] is True
