"""The CrossGuard policy pack (pulumi-policy): the rules every stack must meet to be production-safe.

One set of rules serves two runners: the Pulumi CLI (`pulumi preview --policy-pack policy/`, which runs
``__main__.py``) and `pynomaly-ops policy check`, which hands the same pulumi_policy policies the program's
offline rendering (policy/engine.py). The pack reads the core (the numbers file, the settings model, the alarm
catalogue) and never infra/: it checks what the program declares, not how.
"""
