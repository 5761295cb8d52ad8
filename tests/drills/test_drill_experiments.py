"""The experiments as Chaos Toolkit and the catalogue see them: valid, one per drill, every provider callable
with its declared arguments, the measurement around the method, and the steady state every drill checks."""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chaoslib.experiment import ensure_experiment_is_valid
from chaoslib.loader import load_experiment
from drill_testkit import event, requests, session, write_attempts, write_run, writes_summary

from drills import catalog, measures, steps, targets
from local import faults, probes
from pynomaly_ops.alarms import Target, catalogue, for_target
from pynomaly_ops.baselines import load
from pynomaly_ops.settings import FIS_DRILLS

FILES = sorted(catalog.EXPERIMENTS.glob("*.json"))
STEADY_STATE = {
    "drills.steps.health_ok",
    "drills.steps.topology_intact",
    "drills.steps.no_alarm_firing",
    "drills.steps.within_warning",
}


def _experiment(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _activities(experiment: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for probe in experiment.get("steady-state-hypothesis", {}).get("probes", []):
        yield "steady state", probe
    for activity in experiment.get("method", []):
        yield "method", activity
    for activity in experiment.get("rollbacks", []):
        yield "rollbacks", activity


def _name(activity: dict[str, Any]) -> str:
    provider = activity["provider"]
    return f"{provider.get('module')}.{provider.get('func')}"


def _python_calls(experiment: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Every python provider: where it is, the activity, its arguments."""
    for where, activity in _activities(experiment):
        provider = activity["provider"]
        if provider["type"] == "python":
            yield f"{where}: {activity['name']}", provider, provider.get("arguments", {})


def test_the_experiments_directory_is_not_empty():
    assert len(FILES) >= 5, FILES


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_every_experiment_is_valid_for_chaos_toolkit(path):
    experiment = load_experiment(str(path))
    ensure_experiment_is_valid(experiment)  # raises InvalidExperiment with the reason


def test_every_drill_has_its_experiment_and_every_experiment_its_drill():
    assert sorted(p.stem for p in FILES) == sorted(d.name for d in catalog.DRILLS)
    for drill in catalog.DRILLS:
        assert drill.experiment.is_file(), drill.experiment
        extension = _experiment(drill.experiment)["extensions"][0]
        assert extension["name"] == "pynomaly"
        assert extension["drill"] == drill.name, f"{drill.experiment.name} says it is {extension['drill']!r}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_every_python_provider_exists_and_accepts_its_arguments(path):
    calls = list(_python_calls(_experiment(path)))
    assert calls
    for where, provider, arguments in calls:
        module = importlib.import_module(provider["module"])
        func = getattr(module, provider["func"], None)
        assert callable(func), f"{path.name} {where}: {provider['module']}.{provider['func']} does not exist"
        try:
            inspect.signature(func).bind_partial(**arguments)
        except TypeError as exc:
            pytest.fail(f"{path.name} {where}: {_name({'provider': provider})}{tuple(arguments)}: {exc}")
        missing = [
            p.name
            for p in inspect.signature(func).parameters.values()
            if p.default is inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and p.name not in arguments
        ]
        assert not missing, f"{path.name} {where}: {_name({'provider': provider})} needs {missing}"


def _lookup(kind: str, name: str) -> Any:
    try:
        return targets.function(kind, name)
    except targets.DrillError:
        return None


def _nested(provider: dict[str, Any], arguments: dict[str, Any]) -> tuple[Any, dict[str, Any]] | None:
    """The fault-library function a step calls by name (inject/act/await_...) on the current target (as
    drills/targets.py finds it), with the arguments it gets."""
    if provider["module"] != "drills.steps":
        return None
    func = provider["func"]
    from_events = dict.fromkeys(arguments.get("from_events", {}), "from an earlier step")
    if func == "inject":
        return _lookup("faults", arguments["fault"]), arguments.get("arguments", {}) | from_events
    if func == "recover":
        return _lookup("recovery", arguments["procedure"]), arguments.get("arguments", {}) | from_events
    if func == "act":
        action = arguments["action"]
        found = _lookup("faults", action) or _lookup("recovery", action)
        return found, arguments.get("arguments", {}) | from_events
    if func == "await_":
        return _lookup("probes", arguments["probe"]), arguments.get("arguments", {}) | from_events
    if func == "await_fault_argument":
        passed = {**arguments.get("arguments", {}), arguments["argument"]: "from the fault"}
        passed["timeout_s"] = arguments["timeout_s"]
        return _lookup("probes", arguments["probe"]), passed
    return None


ON_TARGETS = [(d, t) for d in catalog.DRILLS for t in d.targets]


@pytest.mark.parametrize(("drill", "target"), ON_TARGETS, ids=lambda x: getattr(x, "name", x))
def test_the_faults_and_waits_the_steps_name_exist_and_accept_their_arguments(drill, target, monkeypatch):
    """On each of the drill's targets: the AWS fault library mirrors the local one by name and argument."""
    monkeypatch.setenv(targets.TARGET_ENV, target)
    for where, provider, arguments in _python_calls(_experiment(drill.experiment)):
        nested = _nested(provider, arguments)
        if nested is None:
            continue
        func, passed = nested
        assert callable(func), f"{drill.name} {where}: names a fault or wait the {target} target lacks: {arguments}"
        try:
            inspect.signature(func).bind(**passed)
        except TypeError as exc:
            pytest.fail(f"{drill.name} on {target} {where}: {func.__name__}({passed}): {exc}")


def _fault_keys_taken(experiment: dict[str, Any]) -> tuple[str | None, set[str]]:
    """The fault the method injects, and the keys of its result later steps take (``await_fault_argument``)."""
    calls = [(p["func"], a) for _, p, a in _python_calls(experiment) if p["module"] == "drills.steps"]
    fault = next((a["fault"] for func, a in calls if func == "inject"), None)
    return fault, {a["from_key"] for func, a in calls if func == "await_fault_argument"}


def _says(func: Any, key: str) -> bool:
    """``"key"`` is written in the function's module (a fault may build its result in a helper)."""
    return f'"{key}"' in inspect.getsource(inspect.getmodule(func))  # type: ignore[arg-type]


@pytest.mark.parametrize(("drill", "target"), ON_TARGETS, ids=lambda x: getattr(x, "name", x))
def test_what_the_waits_take_from_the_fault_is_in_its_result(drill, target, monkeypatch):
    """A key a wait takes from the fault's result is one the fault returns, on each target and via FIS (the
    pod-loss experiment once took ``names`` from a fault that returns ``deleted``: no run could pass)."""
    from aws_target import fis

    monkeypatch.setenv(targets.TARGET_ENV, target)
    fault, taken = _fault_keys_taken(_experiment(drill.experiment))
    for key in taken:
        assert fault and _says(targets.function("faults", fault), key), f"{drill.name} on {target}: no {key!r}"
        aim = fis.AIMS.get(fault or "")
        if target == targets.AWS and drill.name in FIS_DRILLS and aim is not None:
            assert key == aim.key or (aim.before and _says(aim.before, key)), f"{drill.name} via FIS: no {key!r}"


@pytest.mark.parametrize("drill", catalog.DRILLS, ids=lambda d: d.name)
def test_the_method_is_measured_from_start_to_finish(drill):
    method = _experiment(drill.experiment)["method"]
    assert _name(method[0]) == "drills.session.start"
    assert method[0]["provider"]["arguments"]["drill"] == drill.name
    assert _name(method[-1]) == "drills.session.finish"
    middle = [_name(a) for a in method[1:-1]]
    assert "drills.session.start" not in middle and "drills.session.finish" not in middle


@pytest.mark.parametrize("drill", catalog.DRILLS, ids=lambda d: d.name)
def test_the_rollbacks_stop_a_measurement_left_running_after_undoing_the_fault(drill):
    rollbacks = [_name(a) for a in _experiment(drill.experiment)["rollbacks"]]
    assert "drills.session.abort_if_running" in rollbacks
    # Last: the target lock is held until every other rollback has undone the fault.
    assert rollbacks[-1] == "drills.session.abort_if_running", rollbacks


@pytest.mark.parametrize("drill", catalog.DRILLS, ids=lambda d: d.name)
def test_the_steady_state_has_the_four_probes(drill):
    probes_ = _experiment(drill.experiment)["steady-state-hypothesis"]["probes"]
    assert {_name(p) for p in probes_} == STEADY_STATE
    assert len(probes_) == 4
    by_func = {p["provider"]["func"]: p for p in probes_}
    for func in ("health_ok", "topology_intact", "no_alarm_firing"):
        assert by_func[func]["tolerance"] is True
    assert by_func["within_warning"]["tolerance"] == {"type": "jsonpath", "path": "$.ok", "expect": True}
    keys = by_func["no_alarm_firing"]["provider"]["arguments"]["keys"]
    # An unknown key would be skipped silently by the probe: each must be an alarm the local target has.
    local_keys = {a.key for a in for_target(catalogue(load()), Target.PROMETHEUS)}
    assert keys and set(keys) <= local_keys, set(keys) - local_keys
    assert {"error_rate.critical", "no_healthy_hosts.critical"} <= set(keys)


def _timed_events(experiment: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The events the method's waits mark with their ``seconds``, and the figures they count."""
    events = []
    for activity in experiment["method"]:
        provider, arguments = activity["provider"], activity["provider"].get("arguments", {})
        func = provider.get("func")
        if func in ("await_", "await_fault_argument"):
            events.append((arguments["event"], dict.fromkeys(probes.FIGURES.get(arguments["probe"], ()), 0)))
        elif func == "act" and arguments.get("event"):
            events.append((arguments["event"], dict.fromkeys(faults.FIGURES.get(arguments["action"], ()), 0)))
        elif func == "recover":
            counted = {k: v for m in targets._modules("recovery") for k, v in getattr(m, "FIGURES", {}).items()}
            events.append((arguments["event"], dict.fromkeys(counted.get(arguments["procedure"], ()), 0)))
        elif func in ("await_p95_under_warning", "await_jobs_done", "await_alarm"):
            default = inspect.signature(getattr(steps, func)).parameters["event"].default
            figures = dict.fromkeys(steps.JOB_FIGURES, 0) if func == "await_jobs_done" else {}
            if arguments.get("figure"):
                figures[arguments["figure"]] = 1
            events.append((arguments.get("event", default), figures))
    return events


@pytest.mark.parametrize("drill", catalog.DRILLS, ids=lambda d: d.name)
def test_every_objective_is_a_figure_the_drills_own_records_give(drill, tmp_path):
    """An objective whose figure the experiment never produces would be 'not met' on every run."""
    experiment = _experiment(drill.experiment)
    start = experiment["method"][0]["provider"]["arguments"]
    events = [event("measurement started", 0), event(measures.FAULT, 20, {"fault": "synthetic"})]
    timed = _timed_events(experiment)
    events += [event(name, 25 + i, {"seconds": 5.0 + i, "figures": f}) for i, (name, f) in enumerate(timed)]
    events.append(event("measurement stopped", 40))
    writes = writes_summary(800, 0, 3.0) if start.get("writes") else None
    data = session(events, writes=writes, drill=drill.name)
    run_dir = write_run(tmp_path, requests(40), data, write_attempts(40) if writes else None)
    m = measures.measure(run_dir, load())
    for objective in drill.objectives:
        assert m.get(objective.measured) is not None, (
            f"{drill.name}: objective {objective.what!r} reads {objective.measured!r}, which its experiment "
            f"never measures; measured: {sorted(k for k, v in m.items() if v is not None)}"
        )


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_what_a_step_takes_from_earlier_steps_is_marked_before_it(path):
    marked: set[str] = set()
    for activity in _experiment(path)["method"]:
        arguments = activity["provider"].get("arguments", {})
        for argument, source in arguments.get("from_events", {}).items():
            event_name = source.rpartition(".")[0]
            assert event_name in marked, f"{path.name} {activity['name']}: {argument} from {source!r}, not marked yet"
        if activity["provider"].get("func") == "inject":
            marked.add(measures.FAULT)
        elif "event" in arguments:
            marked.add(arguments["event"])
