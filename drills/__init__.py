"""The monthly failure-injection drills: Chaos Toolkit experiments (experiments/), the steps they call,
measurement, objectives, runner and reports. Imports the core and the local stack's fault library, never infra/."""
