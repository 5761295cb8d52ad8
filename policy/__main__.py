"""Entry point of the pack for `pulumi preview --policy-pack policy/` (PulumiPolicy.yaml, runtime python)."""

from policy.pack import serve

serve()
