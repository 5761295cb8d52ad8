# For mypy only (mypy_path in pyproject.toml): the real pulumi_aws/__init__.py imports all of its ~240 service
# modules for type checkers, which takes mypy past 24 GB and gets it killed (pulumi/pulumi#6837). This package
# stub re-exports only the services infra/ uses; their modules are still read, typed, from the installed SDK.
# A new `aws.<service>` in infra/ is reported as 'Module has no attribute': add the service here.

from pulumi_aws import autoscaling as autoscaling
from pulumi_aws import backup as backup
from pulumi_aws import cloudwatch as cloudwatch
from pulumi_aws import ec2 as ec2
from pulumi_aws import eks as eks
from pulumi_aws import elasticache as elasticache
from pulumi_aws import elb as elb
from pulumi_aws import fis as fis
from pulumi_aws import iam as iam
from pulumi_aws import kms as kms
from pulumi_aws import lb as lb
from pulumi_aws import rds as rds
from pulumi_aws import s3 as s3
from pulumi_aws import scheduler as scheduler
from pulumi_aws import secretsmanager as secretsmanager
from pulumi_aws import sns as sns
from pulumi_aws import sqs as sqs
from pulumi_aws import vpc as vpc
from pulumi_aws import wafv2 as wafv2
from pulumi_aws.get_availability_zones import get_availability_zones_output as get_availability_zones_output
from pulumi_aws.get_caller_identity import get_caller_identity_output as get_caller_identity_output
from pulumi_aws.get_region import get_region_output as get_region_output
