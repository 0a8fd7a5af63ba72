"""Clients of the public HTTP API, shipped with the package: ``clipq-import`` (importer.py)."""
