"""Control-system integration: value types, the write-safety layer and the service that
builds the configured connector. Connectors themselves are plugins."""
