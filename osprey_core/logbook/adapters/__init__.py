"""Built-in logbook adapters: generic JSON / JSONL / CSV, and ALS-, JLab- and ORNL-style
exports. Each module holds one format; the ``logbook_adapters`` plugin registers them."""
