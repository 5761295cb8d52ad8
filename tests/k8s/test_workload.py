"""The workload's manifests, per stack, against the runbook numbers (baselines.yaml) and the stack settings."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from infra.workload import COLORS, deployment_name, namespace_for
from pynomaly_cli.offline import SECRET
from pynomaly_cli.render_k8s import secret_paths
from pynomaly_ops.alarms import Target, catalogue, for_target
from pynomaly_ops.baselines import load

B = load()


def pods(stack):
    """(owner, pod spec) of every pod template: Deployments and the CronJob."""
    for d in stack.all("Deployment"):
        yield d["metadata"]["name"], d["spec"]["template"]["spec"]
    for c in stack.all("CronJob"):
        yield c["metadata"]["name"], c["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def containers(spec):
    return [*spec.get("initContainers", []), *spec["containers"]]


def api_container(deployment):
    (api,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "api"]
    return api


def test_namespace_per_stack(each_stack):
    stack = each_stack.rendering.stack
    expected = "pynomaly-production" if stack == "prod" else f"pynomaly-{stack}"
    assert namespace_for(stack) == expected
    (ns,) = each_stack.all("Namespace")
    assert ns["metadata"]["name"] == expected
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert {m["metadata"].get("namespace") for m in each_stack.objects if m["kind"] != "Namespace"} == {expected}


def test_active_colour_runs_the_minimum_and_idle_colour_is_scaled_to_zero(each_stack):
    w = each_stack.settings.workload
    assert w.idle_replicas == 0  # the default: idle colour scaled to zero
    active = each_stack.get("Deployment", deployment_name(w.active_color))
    idle = each_stack.get("Deployment", deployment_name(w.idle_color))
    assert active["spec"]["replicas"] == B.scaling.pods_min == 3
    assert idle["spec"]["replicas"] == 0


def _k8s(stack, kind: str, name: str):
    """The pulumi-kubernetes resource (not the merged manifest) of one object."""
    (found,) = [
        r
        for r in stack.rendering.resources
        if r.type == f"kubernetes:{kind}" and r.plain_inputs["metadata"]["name"] == name
    ]
    return found


def test_a_rollout_leaves_the_hpa_count_alone(each_stack):
    """The Deployments carry no replica count (re-applying one on every image rollout would drop an HPA-scaled
    colour to the minimum mid-peak); a forced scale patch per colour sets it, changing only with the colour's role."""
    for color in COLORS:
        deployment = _k8s(each_stack, "apps/v1:Deployment", deployment_name(color))
        assert "replicas" not in deployment.plain_inputs["spec"]
        scale = _k8s(each_stack, "apps/v1:DeploymentPatch", deployment_name(color))
        assert set(scale.plain_inputs["spec"]) == {"replicas"}
        assert scale.plain_inputs["metadata"]["annotations"]["pulumi.com/patchForce"] == "true"
        assert deployment.urn in scale.dependencies


@pytest.mark.parametrize("active", COLORS)
def test_a_switch_scales_up_then_moves_traffic_then_scales_down(stack_render, active):
    stack = stack_render("prod", {"workload.active_color": active})
    idle = next(c for c in COLORS if c != active)
    scale_up = _k8s(stack, "apps/v1:DeploymentPatch", deployment_name(active))
    service = _k8s(stack, "core/v1:Service", "pynomaly")
    scale_down = _k8s(stack, "apps/v1:DeploymentPatch", deployment_name(idle))
    (hpa,) = stack.rendering.of_type("kubernetes:autoscaling/v2:HorizontalPodAutoscaler")
    (pdb,) = stack.rendering.of_type("kubernetes:policy/v1:PodDisruptionBudget")
    assert scale_up.plain_inputs["spec"]["replicas"] == B.scaling.pods_min
    assert scale_up.urn in service.dependencies  # traffic moves once the new colour's pods are ready
    assert service.urn in scale_down.dependencies  # the old colour keeps serving until then
    assert scale_up.urn in hpa.dependencies  # an HPA pointed at a Deployment at zero would do nothing
    assert service.urn in pdb.dependencies


def test_api_resources_probes_and_rollout(each_stack):
    for color in COLORS:
        d = each_stack.get("Deployment", deployment_name(color))
        api = api_container(d)
        assert api["resources"] == {
            "requests": {"cpu": "750m", "memory": "2Gi"},
            "limits": {"cpu": "2000m", "memory": "6Gi"},
        }
        assert api["resources"]["requests"] == B.scaling.pod_requests.model_dump()
        assert api["resources"]["limits"] == B.scaling.pod_limits.model_dump()
        assert api["livenessProbe"]["httpGet"]["path"] == "/health"
        assert api["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert api["startupProbe"]["httpGet"]["path"] == "/health"
        port = api["ports"][0]
        assert port["containerPort"] == each_stack.settings.fleet.app_port
        assert api["livenessProbe"]["httpGet"]["port"] == port["name"]
        assert d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        assert (
            api["image"] == f"{each_stack.settings.workload.image_repository}:{each_stack.settings.workload.tag(color)}"
        )
        zone = [c for c in d["spec"]["template"]["spec"]["topologySpreadConstraints"] if "zone" in c["topologyKey"]]
        assert zone == [
            {
                "labelSelector": {"matchLabels": {"app": "pynomaly", "color": color, "component": "api"}},
                "matchLabelKeys": ["pod-template-hash"],
                "maxSkew": 1,
                "nodeTaintsPolicy": "Honor",
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "DoNotSchedule",
            }
        ]


def test_every_container_runs_restricted(each_stack):
    checked = 0
    for owner, spec in pods(each_stack):
        assert spec["securityContext"]["runAsNonRoot"] is True, owner
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, owner
        assert spec["automountServiceAccountToken"] is False, owner
        for c in containers(spec):
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0, (owner, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (owner, c["name"])
            assert sc["allowPrivilegeEscalation"] is False, (owner, c["name"])
            assert sc["privileged"] is False, (owner, c["name"])
            assert sc["capabilities"] == {"drop": ["ALL"]}, (owner, c["name"])
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, (owner, c["name"])
            assert c["resources"]["requests"] and c["resources"]["limits"], (owner, c["name"])
            checked += 1
    assert checked >= 8  # 3 Deployments x (sidecar + main) + the CronJob's three steps


def test_hpa_equals_the_numbers_file_and_targets_the_active_colour(each_stack):
    (hpa,) = each_stack.all("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (B.scaling.pods_min, B.scaling.pods_max) == (3, 20)
    targets = {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"] for m in spec["metrics"]}
    assert targets == {"cpu": B.scaling.target_cpu_percent, "memory": B.scaling.target_memory_percent}
    assert targets == {"cpu": 70, "memory": 80}
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment_name(each_stack.settings.workload.active_color),
    }


def test_pdb_keeps_two_pods_of_the_active_colour(each_stack):
    (pdb,) = each_stack.all("PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 2
    assert pdb["spec"]["selector"]["matchLabels"]["color"] == each_stack.settings.workload.active_color


def test_worker_grace_period_outlasts_a_message(each_stack):
    w, q = each_stack.settings.workload, each_stack.settings.queue
    worker = each_stack.get("Deployment", "pynomaly-worker")
    spec = worker["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] == w.worker_termination_grace_s
    assert spec["terminationGracePeriodSeconds"] > q.visibility_timeout_s
    assert worker["spec"]["replicas"] == w.worker_replicas
    (main,) = spec["containers"]
    assert (
        main["resources"]["requests"]
        == main["resources"]["limits"]
        == {
            "cpu": w.worker_cpu,
            "memory": w.worker_memory,
        }
    )


def test_no_secret_value_in_any_manifest(each_stack):
    # 1. Nothing Pulumi marks secret reached a Kubernetes object.
    for m in each_stack.objects:
        assert secret_paths(m) == [], f"{m['kind']}/{m['metadata']['name']}"
    assert not each_stack.all("Secret")
    # 2. No secret value of the whole program (e.g. the Redis AUTH token) appears in the manifests' text.
    secrets = set()

    def collect(value):
        if isinstance(value, dict):
            if set(value) == {SECRET}:
                secrets.add(json.dumps(value[SECRET]).strip('"'))
            for v in value.values():
                collect(v)
        elif isinstance(value, list):
            for v in value:
                collect(v)

    for r in each_stack.rendering.resources:
        collect(r.inputs)
        collect(r.state)
    assert secrets, "the program declares secrets (e.g. the Redis AUTH token); the check must see them"
    text = yaml.safe_dump_all(each_stack.objects)
    assert [s for s in secrets if len(s) >= 8 and s in text] == []
    # 3. The DSN names no user or password: libpq takes them from the service file the pods write.
    (config,) = [c for c in each_stack.all("ConfigMap") if c["metadata"]["name"] == "pynomaly-config"]
    dsn = config["data"]["PYNOMALY_DB_DSN"]
    assert "password" not in dsn and "user=" not in dsn and "service=pynomaly" in dsn


def test_config_map_speaks_the_service_contract(each_stack):
    config = each_stack.get("ConfigMap", "pynomaly-config")["data"]
    contract = {
        "PYNOMALY_HOST",
        "PYNOMALY_PORT",
        "PYNOMALY_DB_DSN",
        "PYNOMALY_REDIS_URL",
        "PYNOMALY_QUEUE_URL",
        "PYNOMALY_ARTIFACTS_BUCKET",
        "PYNOMALY_WORKER_METRICS_PORT",
        "PYNOMALY_DETECTOR_PROCESSES",
        "AWS_DEFAULT_REGION",
    }
    assert set(config) == contract
    assert config["PYNOMALY_PORT"] == str(each_stack.settings.fleet.app_port)
    assert config["PYNOMALY_QUEUE_URL"].startswith("https://sqs.") and config["PYNOMALY_QUEUE_URL"].endswith(
        f"{each_stack.settings.stack}-queue-jobs"
    )
    assert re.fullmatch(r"rediss://[^:@]+:6379/0", config["PYNOMALY_REDIS_URL"])
    assert config["PYNOMALY_DETECTOR_PROCESSES"] == "2"  # whole CPUs of the 2000m limit


def test_service_follows_active_colour(prod, variant):
    for stack, colour in ((prod, "blue"), (variant, "green")):
        assert stack.settings.workload.active_color == colour
        svc = stack.get("Service", "pynomaly")
        assert svc["spec"]["selector"] == {"app": "pynomaly", "component": "api", "color": colour}
        for preview in COLORS:  # per-colour Services for smoke tests before a switch
            assert stack.get("Service", f"pynomaly-{preview}")["spec"]["selector"]["color"] == preview
        assert stack.get("Deployment", f"pynomaly-{colour}")["spec"]["replicas"] == B.scaling.pods_min
    # The idle colour keeps workload.idle_replicas (2 in the variant) to warm up or roll back to.
    assert variant.get("Deployment", "pynomaly-blue")["spec"]["replicas"] == 2


def test_ingress_for_the_alb_controller_does_not_block_pulumi(prod):
    (ing,) = prod.all("Ingress")
    ann = ing["metadata"]["annotations"]
    assert ann["pulumi.com/skipAwait"] == "true"
    assert ing["spec"]["ingressClassName"] == "alb"
    assert ann["alb.ingress.kubernetes.io/certificate-arn"] == prod.settings.lb.certificate_arn
    assert ann["alb.ingress.kubernetes.io/ssl-policy"] == prod.settings.lb.ssl_policy
    assert ann["alb.ingress.kubernetes.io/target-type"] == "ip"
    public = [s.plain_inputs for s in prod.rendering.of_type("aws:ec2/subnet:Subnet") if "public" in s.name]
    assert len(ann["alb.ingress.kubernetes.io/subnets"].split(",")) == len(public) == 3
    paths = ing["spec"]["rules"][0]["http"]["paths"]
    assert [(p["path"], p["pathType"]) for p in paths] == [("/api", "Prefix"), ("/health", "Exact")]
    assert all(p["backend"]["service"]["name"] == "pynomaly" for p in paths)


@pytest.mark.parametrize("installed", [True, False])
def test_the_ingress_comes_after_the_load_balancer_controller(stack_render, installed):
    """Its webhook admits the Ingress; on destroy it must still run to remove the ALB and clear the finaliser."""
    stack = stack_render("dev", {"cluster.load_balancer_controller": str(installed).lower()})
    (ingress,) = stack.rendering.of_type("kubernetes:networking.k8s.io/v1:Ingress")
    releases = [r.urn for r in stack.rendering.of_type("kubernetes:helm.sh/v3:Release") if "load-balancer" in r.name]
    assert len(releases) == installed
    assert set(releases) <= set(ingress.dependencies)


def _subnet_cidrs(stack, tier: str) -> list[str]:
    """The tier's subnets' CIDRs, by AZ (``<stack>-network-<tier>-<i>``)."""
    return [
        stack.rendering.named(f"{stack.rendering.stack}-network-{tier}-{i}").plain_inputs["cidrBlock"] for i in range(3)
    ]


def test_network_policy_default_deny_then_allows(prod):
    policies = {p["metadata"]["name"]: p["spec"] for p in prod.all("NetworkPolicy")}
    assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    egress = policies["allow-egress"]["egress"]
    ports = {(p["port"], p["protocol"]) for rule in egress for p in rule["ports"]}
    assert ports == {(53, "UDP"), (53, "TCP"), (5432, "TCP"), (6379, "TCP"), (443, "TCP")}
    https = next(r for r in egress if r["ports"] == [{"port": 443, "protocol": "TCP"}])
    assert https["to"][0]["ipBlock"]["except"] == ["169.254.169.254/32"]  # no instance credentials
    # PostgreSQL and Redis only where the database and the cache are.
    data = next(r for r in egress if {"port": 5432, "protocol": "TCP"} in r["ports"])
    assert [peer["ipBlock"]["cidr"] for peer in data["to"]] == _subnet_cidrs(prod, "data")


def test_api_pods_admit_only_the_load_balancer(each_stack):
    """Issue 22: not the whole VPC. The Ingress's ALB (internet-facing, IP targets) sends from its nodes in the
    public subnets: exactly those, on the app port. Kubelet probes come from the pod's own node, which the VPC CNI's
    network policy agent admits whatever the policies say (aws/aws-network-policy-agent#65)."""
    policies = {p["metadata"]["name"]: p["spec"] for p in each_stack.all("NetworkPolicy")}
    api = policies["allow-api-ingress"]
    assert api["podSelector"] == {"matchLabels": {"app": "pynomaly", "component": "api"}}
    (rule,) = api["ingress"]
    public = _subnet_cidrs(each_stack, "public")
    assert len(public) == 3 and [peer["ipBlock"] for peer in rule["from"]] == [{"cidr": cidr} for cidr in public]
    assert rule["ports"] == [{"port": each_stack.settings.fleet.app_port, "protocol": "TCP"}]
    # The ALB's subnets are those very subnets (the Ingress names them; the mocks' ids are "<name>-id").
    (ingress,) = each_stack.all("Ingress")
    subnets = ingress["metadata"]["annotations"]["alb.ingress.kubernetes.io/subnets"].split(",")
    assert subnets == [f"{each_stack.rendering.stack}-network-public-{i}-id" for i in range(3)]
    # The probes are the kubelet's (no other source must be admitted for them).
    for color in COLORS:
        api_pod = api_container(each_stack.get("Deployment", deployment_name(color)))
        probes = [api_pod[kind]["httpGet"] for kind in ("livenessProbe", "readinessProbe", "startupProbe")]
        assert all("host" not in probe for probe in probes)


def test_the_ingress_alb_has_the_ec2_albs_web_acl_rules(each_stack):
    """Issue 22: the EKS path gets the same WAF as the EC2 fleet: its own regional web ACL (named by the Ingress,
    associated by the controller), with the same rules, the same rate limits included."""
    stack = each_stack.rendering.stack
    eks, ec2 = (each_stack.rendering.named(f"{stack}-{tier}-waf").plain_inputs for tier in ("workload", "lb"))
    assert eks["scope"] == ec2["scope"] == "REGIONAL"
    assert eks["rules"] == ec2["rules"] and eks["defaultAction"] == ec2["defaultAction"] == {"allow": {}}
    (ingress,) = each_stack.all("Ingress")
    arn = each_stack.rendering.named(f"{stack}-workload-waf").state["arn"]
    assert ingress["metadata"]["annotations"]["alb.ingress.kubernetes.io/wafv2-acl-arn"] == arn
    # Only the controller associates it: a WebAclAssociation too would fight it over the ALB.
    associations = each_stack.aws("aws:wafv2/webAclAssociation:WebAclAssociation")
    assert [a["webAclArn"] for a in associations] == [each_stack.rendering.named(f"{stack}-lb-waf").state["arn"]]


def test_backup_cronjob_dumps_nightly_to_the_backups_bucket(each_stack):
    (cron,) = each_stack.all("CronJob")
    assert cron["spec"]["schedule"] == each_stack.settings.workload.backup_schedule
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    spec = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "pynomaly-backup"
    steps = [c["name"] for c in containers(spec)]
    assert steps == ["db-credentials", "pg-dump", "upload"]
    pg_dump = spec["initContainers"][1]
    assert pg_dump["image"].endswith(f"postgres:{each_stack.settings.db.engine_version}-alpine")
    upload = spec["containers"][0]
    env = {e["name"]: e["value"] for e in upload["env"]}
    assert env["BACKUPS_BUCKET"] == f"{each_stack.settings.stack}-storage-backups-123456789012"


def test_prometheus_rule_only_with_the_operator(prod, variant):
    assert prod.all("PrometheusRule") == []
    (rule,) = variant.all("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    rules = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    assert rules["PynomalyPodsBelowMinimumCritical"]["expr"].endswith(f"< {B.scaling.pods_min}")
    assert (
        'deployment="pynomaly-green"' in rules["PynomalyPodsBelowMinimumCritical"]["expr"]
    )  # follows the active colour
    assert rules["PynomalyPodRestartsWarning"]["for"] == "0m"
    for name, level in (
        ("PynomalyCpu", B.thresholds.cpu_percent),
        ("PynomalyMemory", B.thresholds.memory_percent),
        ("PynomalyResponseTimeP95", B.thresholds.response_time_p95_ms),
        ("PynomalyErrorRate", B.thresholds.error_rate_percent),
    ):
        assert rules[f"{name}Warning"]["expr"].endswith(f"> {level.warning:g}")
        assert rules[f"{name}Critical"]["expr"].endswith(f"> {level.critical:g}")
        assert rules[f"{name}Critical"]["labels"]["severity"] == "critical"
    assert rules["PynomalyProcessingLagWarning"]["expr"].endswith(f"> {B.app_alarms.processing_lag_s:g}")
    # exactly the catalogue's entries for Kubernetes, under the catalogue's names and keys
    expected = {a.name(Target.KUBERNETES, "prod"): a.key for a in for_target(catalogue(B), Target.KUBERNETES)}
    assert {name: r["labels"]["alarm_key"] for name, r in rules.items()} == expected


def test_a_grace_period_shorter_than_a_message_is_refused_naming_the_keys():
    from pynomaly_cli.offline import PLACEHOLDERS
    from pynomaly_ops.settings import SettingsError, from_stack_file

    bad = {**PLACEHOLDERS, "pynomaly:workload.worker_termination_grace_s": "120"}
    with pytest.raises(SettingsError) as exc:
        from_stack_file("prod", bad)
    message = str(exc.value)
    assert "stacks/Pulumi.prod.yaml" in message
    assert "pynomaly:workload.worker_termination_grace_s: (120) must exceed queue.visibility_timeout_s (300)" in message
