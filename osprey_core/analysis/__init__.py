"""Static analysis of generated Python code, to decide who must look at it before it runs.

The analyzer works on the AST, never on text: comments and strings are not code. It resolves
import aliases and straight-line assignments, tracks variables bound to channel objects
(pyepics ``PV``, caproto and p4p contexts, Tango ``DeviceProxy``, HTTP sessions), follows
them into comprehensions, lambdas and functions defined in the code, and flags *references*
to write-capable functions as well as calls, because a write passed to ``map`` or a thread
is still a write. A call of a control-system package that the tables in
:mod:`osprey_core.analysis.tables` does not know to be a read fails closed as a write. Dynamic
tricks (``exec``, dynamic imports, dispatch by a computed name through ``getattr``,
``methodcaller``, namespaces and the like, dunder walking, shell-outs) are flagged as
dangerous. Anything it cannot parse fails closed with a critical ``parse_error`` finding.

It is *not* the security boundary (the nsjail sandbox and the control-system broker are):
it only decides whether a human must approve the code.
"""

from osprey_core.analysis.analyzer import analyze
from osprey_core.analysis.model import Analysis, Category, Finding, PlannedWrite, Severity

__all__ = ["Analysis", "Category", "Finding", "PlannedWrite", "Severity", "analyze"]
