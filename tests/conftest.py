"""Shared pytest configuration: fixture plugins every test directory can use, and one
hypothesis profile."""

from hypothesis import settings

pytest_plugins = ["tests.fixtures.sandbox"]

# Property tests check what is decided, never how fast: on a loaded 2-core machine one
# example can take longer than hypothesis' default 200 ms deadline.
settings.register_profile("voicefleet", deadline=None)
settings.load_profile("voicefleet")
