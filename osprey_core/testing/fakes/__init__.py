"""In-memory test doubles for every osprey hook family.

Each fake is a working implementation of its base class (it keeps state, filters,
fires callbacks, fails on request) and records how it was used, so a test can drive
the core through the real registration path and then check what the core did.

Families the core receives as *instances* (capabilities, data providers, approval
policies) are configured through the constructor. Families it receives as *classes*
(code generators, connectors, archivers, logbook adapters, embedding models) are
configured through ``named(...)``, which returns a fresh subclass: the core builds the
instances itself, and each subclass keeps its own ``instances`` list so a test can
reach the objects the core built.

This module imports no test framework, so the fakes also work in demos and notebooks.
"""

from osprey_core.testing.fakes.classes import (
    FakeCodeGenerator,
    FakeEmbeddingModel,
    FakeExecutionBackend,
    FakeLogbookAdapter,
)
from osprey_core.testing.fakes.control import FakeArchiver, FakeConnector
from osprey_core.testing.fakes.instances import FakeApprovalPolicy, FakeCapability, FakeDataProvider
from osprey_core.testing.fakes.plugins import FakeObserver, fake_plugin

__all__ = [
    "FakeApprovalPolicy",
    "FakeArchiver",
    "FakeCapability",
    "FakeCodeGenerator",
    "FakeConnector",
    "FakeDataProvider",
    "FakeEmbeddingModel",
    "FakeExecutionBackend",
    "FakeLogbookAdapter",
    "FakeObserver",
    "fake_plugin",
]
