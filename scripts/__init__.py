"""clipq's scripts: run each from the repository root as ``python -m scripts.NAME``.

Shared helpers live in ``scripts.lib``; the scripts import them, never each other's copies.
"""
