"""Built-in plugins. Each is an ordinary plugin module listed as an ``osprey`` entry point."""
