"""The engine: transport, survey, pre-flight, plan, rollout, health, undo, locks and report.

It knows hosts and Prefect's transactions and concurrency, but no CLI and no flow; flows
wire its steps together and pass in the Prefect-task versions of the steps (``tasks/steps.py``).
"""
