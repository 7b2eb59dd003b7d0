"""Shared pytest configuration: fixture plugins every test directory can use."""

pytest_plugins = ["tests.fixtures.sandbox"]
