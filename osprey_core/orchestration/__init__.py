"""Orchestration: drives runs through the state machine, durably.

``runtime`` holds what every run in a process shares, ``recorder`` what a run writes
(state commits, audit, approval requests), ``controller`` the side effect of each state,
``decisions`` approving, rejecting and editing, and ``orchestrator`` the entry point
interfaces call. Import from the modules: this package's ``__init__`` stays empty so that
importing one of them does not import the rest.
"""
