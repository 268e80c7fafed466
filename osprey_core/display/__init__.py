"""Results and records laid out for people: plain text, tables, times in local time.

Capabilities call these from their ``render`` method; the command line prints what they
return. Nothing here is imported until something is shown, so ``osprey --help`` never
loads rich.
"""
