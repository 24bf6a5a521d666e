"""The vast.ai fake fixtures, shared with tests/vast."""

from tests.vast.conftest import API_KEY, clock, fake, live_fake  # noqa: F401
