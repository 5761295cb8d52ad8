"""The AWS target of the fault library: the local stack's faults and probes (local/faults.py, local/probes.py),
by the same names and arguments, against a Pulumi stack's resources through the AWS APIs.

A stack is named by its outputs: ``outputs=FILE`` (a saved ``pulumi stack output --json``) or ``stack=NAME``
(the Pulumi CLI reads them), where the local functions take ``state_dir``. Every call goes through boto3's
default session (its credentials and endpoint configuration) in the stack's region; nothing here sends
traffic to the service itself.
"""
