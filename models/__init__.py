"""CLIP models for clipq: loading (hub tag, local checkpoint or seeded random weights) and encoding."""
