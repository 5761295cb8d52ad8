"""Small scripts the workload's pods run (mounted from a ConfigMap, run with the service image's Python)."""
