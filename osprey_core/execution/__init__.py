"""The Python execution service: generate, analyze, approve and run code in the sandbox."""
