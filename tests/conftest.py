"""Test configuration: the opt-in osprey testing kit provides the host fixtures."""

pytest_plugins = ["osprey_core.testing"]
