"""Placeholder until this plugin lands (issue 5/6 work in progress)."""
