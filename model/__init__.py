"""The model: inventory, desired state, git source, YAML positions, release records, errors.

The ground floor of the house. It imports nothing else of the project, and knows no hosts,
no SSH and no Prefect.
"""
