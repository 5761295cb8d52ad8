"""Resource naming shared by the Pulumi program and the local stack: `<stack>-<tier>-<role>`."""

from __future__ import annotations


def resource_name(stack: str, tier: str, role: str) -> str:
    """``<stack>-<tier>-<role>``: the name of every resource the project makes."""
    return f"{stack}-{tier}-{role}"


def queue_names(stack: str) -> tuple[str, str]:
    """Physical names of the job queue and its dead-letter queue, in AWS and on the local stack."""
    return resource_name(stack, "queue", "jobs"), resource_name(stack, "queue", "jobs-dlq")


def component_type(tier: str, name: str) -> str:
    """``pynomaly:<tier>:<Name>``: the type token of a tier's component."""
    return f"pynomaly:{tier}:{name}"


# The load generators on EKS (infra/load_generators.py), which `load run --remote` (loadtests/remote.py) reaches.
LOCUST_MASTER_SERVICE = "locust-master"
LOCUST_WEB_PORT = 8089  # Locust's defaults
LOCUST_BUS_PORT = 5557
LOAD_API_KEY_SECRET = "pynomaly-load-api-key"  # created by the operator: the key never enters Pulumi's state
LOAD_API_KEY_ITEM = "api-key"
LOAD_API_KEY_FILE_ENV = "PYNOMALY_API_KEY_FILE"  # where the locustfile reads the key the pods mount
API_KEY_ENV = "PYNOMALY_API_KEY"  # the API key drills and load tests send to a stack (its outputs never hold one)
LOAD_ALLOW_REMOTE_ENV = "PYNOMALY_LOAD_ALLOW_REMOTE"  # "1": load may go to a non-loopback target you operate
LOCUST_RUN_ROUTE = "/pynomaly/run"  # the locustfile's route on a master left running (web mode)


def load_generators_namespace(stack: str) -> str:
    return f"pynomaly-load-{stack}"


DB_NAME = "pynomaly"  # the RDS database the program creates (infra/database.py) and the drills write through
DRILL_DB_DSN_ENV = "PYNOMALY_DRILL_DB_DSN"  # a stack's writer as a libpq DSN, when the default will not reach it
