"""Prefect flows: thin DAGs that wire tasks together."""
