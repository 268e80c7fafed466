"""The execution sandbox: nsjail runner, in-jail runtime API and the control-system broker."""

#: Modules of this package the jail gets (standard library only, no osprey imports): the
#: backends copy them into a tiny ``osprey_core.sandbox`` package visible inside the jail.
IN_JAIL_MODULES: tuple[str, ...] = ("bootstrap.py", "runtime.py", "outputs.py")
