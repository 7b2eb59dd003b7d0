"""The end-to-end suite uses the sandbox fixtures of the test suite."""

pytest_plugins = ["tests.fixtures.sandbox"]
