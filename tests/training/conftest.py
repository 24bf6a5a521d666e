"""Fixtures for the trainer tests; the helpers live in trainer_helpers.py."""

from tests.training.trainer_helpers import bucket, vast  # noqa: F401
