"""Fixtures shared by every test module live in plugin modules."""

pytest_plugins = ["tests.services", "tests.bundles", "tests.workers"]
