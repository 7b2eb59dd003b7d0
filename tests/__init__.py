"""voicefleet's tests (a package, so tests/conftest.py can load tests.fixtures plugins)."""
