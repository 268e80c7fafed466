"""The execution sandbox: nsjail runner, in-jail runtime API and the control-system broker."""
