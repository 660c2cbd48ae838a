"""Prefect Block types holding connection settings and credentials."""
