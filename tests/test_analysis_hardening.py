"""Analyzer hardening (issue 10, items 6 and 7): dispatch by a computed name, calls of
control-system packages that are not known reads (they fail closed as writes), and Tango
attribute reads that are reads, not commands."""

from __future__ import annotations

import textwrap
import time

import pytest

from osprey_core.analysis import Analysis, Category, analyze


def run(code: str) -> Analysis:
    return analyze(textwrap.dedent(code))


def write_lines(analysis: Analysis) -> list[int]:
    return sorted({f.line for f in analysis.findings if f.category is Category.CONTROL_WRITE})


PV = "import epics\npv = epics.PV('X')\n"
DEV = "import tango\ndev = tango.DeviceProxy('sr/dcct/1')\n"
RT = "import osprey_core.sandbox.runtime as rt\n"
OP = "import operator\n"

# ---- class 1: generic dispatch whose target name is computed at run time

COMPUTED_DISPATCH_ON_CONTROL = {
    "methodcaller applied": OP + PV + "operator.methodcaller(name, 1)(pv)\n",
    "methodcaller bound": OP + PV + "call = operator.methodcaller(name, 1)\ncall(pv)\n",
    "methodcaller alias": "from operator import methodcaller as mc\n" + PV + "mc(name, 1)(pv)\n",
    "methodcaller in map": (
        OP + "import epics\npvs = [epics.PV(n) for n in 'AB']\n"
        "list(map(operator.methodcaller(name, 1), pvs))\n"
    ),
    "attrgetter": OP + "import epics\noperator.attrgetter(name)(epics)('X', 1)\n",
    "attrgetter alias": (
        "from operator import attrgetter as ag\nimport epics\nf = ag(name)\nf(epics)('X', 1)\n"
    ),
    "partial getattr": (
        "import functools\nimport epics\nf = functools.partial(getattr, epics)\nf(name)('X', 1)\n"
    ),
    "reduce getattr": (
        "import functools\nimport epics\nfunctools.reduce(getattr, parts, epics)('X', 1)\n"
    ),
    "map getattr": "import epics\nfs = list(map(getattr, [epics], [name]))\n",
    "vars subscript": "import epics\nvars(epics)[name]('X', 1)\n",
    "vars get": "import epics\nvars(epics).get(name)('X', 1)\n",
    "module dict subscript": "import epics\nepics.__dict__[name]('X', 1)\n",
    "type dict": PV + "type(pv).__dict__[name](pv, 1)\n",
    "object getattribute": "import epics\nobject.__getattribute__(epics, name)('X', 1)\n",
    "bound getattribute": PV + "pv.__getattribute__(name)(1)\n",
    "getattr_static": "import inspect\nimport epics\ninspect.getattr_static(epics, name)('X', 1)\n",
    "getattr_static from": (
        "from inspect import getattr_static as gs\nimport epics\ngs(epics, name)('X', 1)\n"
    ),
    "getattr tango": DEV + "getattr(dev, command)()\n",
    "getattr runtime": RT + "getattr(rt, 'write_' + kind)('X', 1)\n",
    "globals subscript": "globals()[name]('X', 1)\n",
    "globals get": "g = globals()\ng.get(name)('X', 1)\n",
    "locals subscript": "locals()['write_' + kind]('X', 1)\n",
    "globals values": "for f in globals().values():\n    f('X', 1)\n",
    "in a lambda": (
        OP + PV + "act = lambda p: operator.methodcaller(name, 1)(p)\nact(pv)\n"
    ),
    "in a function": (
        "import epics\ndef act(mod, what):\n    return getattr(mod, what)('X', 1)\n"
        "act(epics, name)\n"
    ),
}


@pytest.mark.parametrize(
    "code", COMPUTED_DISPATCH_ON_CONTROL.values(), ids=COMPUTED_DISPATCH_ON_CONTROL.keys()
)
def test_computed_dispatch_on_control_objects_is_dangerous_and_a_write(code: str) -> None:
    analysis = analyze(code)
    assert analysis.dangerous, analysis.findings
    assert analysis.writes, analysis.findings
    assert analysis.write_targets is None


COMPUTED_DISPATCH = {
    "methodcaller": OP + "f = operator.methodcaller(name)\n",
    "methodcaller from": "from operator import methodcaller\nf = methodcaller(name, 1)\n",
    "methodcaller alias": "from operator import methodcaller as mc\nf = mc(name)\n",
    "methodcaller starred": OP + "f = operator.methodcaller(*spec)\n",
    "operator module alias": "import operator as op\nf = op.methodcaller(name)\n",
    "attrgetter": OP + "f = operator.attrgetter('a', name)\n",
    "partial getattr": "import functools\nf = functools.partial(getattr, obj)\n",
    "partial methodcaller": (
        "import functools\nfrom operator import methodcaller\n"
        "f = functools.partial(methodcaller, name)\n"
    ),
    "getattr alias": "g = getattr\nx = g(obj, name)\n",
    "getattr_static": "import inspect\ninspect.getattr_static(obj, name)\n",
    "object getattribute": "object.__getattribute__(obj, name)\n",
    "vars subscript": "vars(obj)[name]\n",
    "dict subscript": "obj.__dict__[name]\n",
    "type dict": "type(obj).__dict__[name]\n",
    "import_module": "import importlib\nm = importlib.import_module(name)\n",
    "__import__": "m = __import__(name)\n",
    "sys.modules": "import sys\nm = sys.modules[name]\n",
    "globals": "f = globals()[name]\n",
    "locals": "f = locals()[name]\n",
    "eval": "f = eval(name)\n",
    "exec": "exec(source)\n",
    "compile": "c = compile(source, 'x', 'exec')\n",
    "comprehension": OP + "fs = [operator.methodcaller(n) for n in names]\n",
    "function": OP + "def caller(n):\n    return operator.methodcaller(n)\n",
}


@pytest.mark.parametrize("code", COMPUTED_DISPATCH.values(), ids=COMPUTED_DISPATCH.keys())
def test_any_dispatch_by_a_computed_name_is_dangerous(code: str) -> None:
    assert analyze(code).dangerous, analyze(code).findings


CONSTANT_WRITE_DISPATCH = {
    "methodcaller put": OP + PV + "operator.methodcaller('put', 1)(pv)\n",
    "methodcaller put unapplied": OP + "f = operator.methodcaller('put', 1)\n",
    "methodcaller write_attribute": OP + "f = operator.methodcaller('write_attribute', 'x', 1)\n",
    "methodcaller alias": "from operator import methodcaller as mc\nf = mc('caput', 'X', 1)\n",
    "methodcaller folded": OP + "f = operator.methodcaller('ca' + 'put', 'X', 1)\n",
    "methodcaller tango command": OP + DEV + "operator.methodcaller('Init')(dev)\n",
    "methodcaller map over devices": (
        OP + "import tango\ndevs = [tango.DeviceProxy(n) for n in names]\n"
        "list(map(operator.methodcaller('On'), devs))\n"
    ),
    "methodcaller runtime": RT + OP + "operator.methodcaller('write_channel', 'X', 1)(rt)\n",
    "partial methodcaller": (
        "import functools\nfrom operator import methodcaller\n"
        "f = functools.partial(methodcaller, 'put')\n"
    ),
    "partial getattr": (
        "import functools, epics\nf = functools.partial(getattr, epics, 'caput')\nf()('X', 1)\n"
    ),
    "attrgetter caput": OP + "f = operator.attrgetter('caput')\n",
    "attrgetter applied": OP + "import epics\noperator.attrgetter('caput')(epics)('X', 1)\n",
    "attrgetter dotted": OP + "import epics\nf = operator.attrgetter('ca.put')(epics)\n",
    "vars literal": "import epics\nvars(epics)['caput']('X', 1)\n",
    "type dict literal": PV + "type(pv).__dict__['put'](pv, 1)\n",
    "type method": PV + "type(pv).put(pv, 1)\n",
    "getattribute literal": "import epics\nobject.__getattribute__(epics, 'caput')('X', 1)\n",
    "getattr_static literal": "import inspect, epics\ninspect.getattr_static(epics, 'caput')\n",
    "getattr alias literal": "import epics\ng = getattr\ng(epics, 'caput')('X', 1)\n",
    "globals literal": "globals()['write_channel']('X', 1)\n",
    "globals folded": "globals()['write_' + 'channel']('X', 1)\n",
    "sys.modules get": "import sys\nsys.modules.get('epics').caput('X', 1)\n",
    "import_module folded": (
        "import importlib\nimportlib.import_module('ep' + 'ics').caput('X', 1)\n"
    ),
    "eval expression": "import epics\neval('epics.caput')('X', 1)\n",
    "exec sees outer imports": "import epics\nexec('epics.caput(\"X\", 1)')\n",
}


@pytest.mark.parametrize(
    "code", CONSTANT_WRITE_DISPATCH.values(), ids=CONSTANT_WRITE_DISPATCH.keys()
)
def test_dispatch_to_a_constant_write_name_is_a_write(code: str) -> None:
    analysis = analyze(code)
    assert analysis.writes, analysis.findings


def test_runtime_write_through_methodcaller_has_no_target_list() -> None:
    analysis = run(RT + OP + "operator.methodcaller('write_channel', 'X', 1)(rt)\n")
    assert analysis.write_targets is None


@pytest.mark.parametrize(
    "code",
    [
        OP + "f = operator.methodcaller('mean')\n",
        OP + "f = operator.attrgetter('shape', 'dtype')\n",
        OP + "import numpy as np\nf = operator.methodcaller('sum', axis=0)(np.ones(3))\n",
        OP + "rows.sort(key=operator.itemgetter(1))\n",
        OP + "rows = sorted(rows, key=operator.attrgetter('value'))\n",
        "f = globals()['helper']\n",
    ],
    ids=["methodcaller", "attrgetter", "applied", "itemgetter", "sort key", "globals"],
)
def test_dispatch_to_constant_harmless_names_is_not_a_write(code: str) -> None:
    assert not analyze(code).writes, analyze(code).findings


# ---- class 2: calls of control-system packages that are not known reads

UNKNOWN_CONTROL_CALLS = {
    "autosave restore": "import epics.autosave\nepics.autosave.restore_pvs('f.sav')\n",
    "autosave from import": "from epics.autosave import restore_pvs\nrestore_pvs('f.sav')\n",
    "autosave alias": "from epics.autosave import restore_pvs as r\nr('f.sav')\n",
    "autosave module alias": "import epics.autosave as asv\nasv.restore_pvs('f.sav')\n",
    "autosave from epics": "from epics import autosave\nautosave.restore_pvs('f.sav')\n",
    "module alias of alias": "import epics\nm = epics\nm.autosave.restore_pvs('x')\n",
    "reference called later": (
        "import epics.autosave\nrestore = epics.autosave.restore_pvs\nrestore('f.sav')\n"
    ),
    "in thread": (
        "import threading\nimport epics.autosave\n"
        "threading.Thread(target=epics.autosave.restore_pvs, args=('f.sav',)).start()\n"
    ),
    "in timer": (
        "from epics import autosave\nimport threading\n"
        "threading.Timer(1.0, autosave.restore_pvs, args=('f',)).start()\n"
    ),
    "as callback": "import epics\nepics.camonitor('X', callback=epics.autosave.restore_pvs)\n",
    "in map": "import epics.autosave\nlist(map(epics.autosave.restore_pvs, files))\n",
    "in partial": (
        "import functools\nimport epics.autosave\n"
        "functools.partial(epics.autosave.restore_pvs, 'f.sav')()\n"
    ),
    "in executor": (
        "import epics.autosave\nfrom concurrent.futures import ThreadPoolExecutor\n"
        "with ThreadPoolExecutor() as pool:\n    pool.submit(epics.autosave.restore_pvs, 'f')\n"
    ),
    "in dict": (
        "import epics.autosave\nactions = {'restore': epics.autosave.restore_pvs}\n"
        "actions['restore']('f.sav')\n"
    ),
    "in list": "import epics.autosave as a\nfs = [a.restore_pvs]\nfs[0]('f')\n",
    "module in list": "import epics\nx = [epics]\nx[0].caput('X', 1)\n",
    "module in dict": "import epics\nns = {'e': epics}\nns['e'].autosave.restore_pvs('f')\n",
    "import_module": (
        "import importlib\nimportlib.import_module('epics.autosave').restore_pvs('f.sav')\n"
    ),
    "sys.modules": "import sys\nsys.modules['epics'].autosave.restore_pvs('f')\n",
    "getattr literal": "import epics\ngetattr(epics.autosave, 'restore_pvs')('x')\n",
    "save_restore": "import epics.autosave\nepics.autosave.save_restore()\n",
    "ca sg_put": "import epics.ca\nepics.ca.sg_put(gid, chid, 1)\n",
    "pv unknown method": PV + "pv.force_write(1)\n",
    "motor tweak": "import epics\nm = epics.Motor('M1')\nm.tweak('forward')\n",
    "motor set_position": "from epics import Motor\nMotor('M1').set_position(0)\n",
    "device restore_state": "import epics\nd = epics.Device('D:')\nd.restore_state(state)\n",
    "caproto sync": "from caproto.sync.client import read_write_read\nread_write_read('X', 1)\n",
    "caproto pv unknown": (
        "from caproto.threading.client import Context\n"
        "pv, = Context().get_pvs('X')\npv.write_later(1)\n"
    ),
    "caproto batch": (
        "from caproto.threading.client import Batch\nwith Batch() as b:\n    b.write(pv, 1)\n"
    ),
    "p4p unknown": "from p4p.client.thread import Context\nContext('pva').put_many(['X'], [1])\n",
    "p4p server": "from p4p.server import Server\nServer(providers=[p])\n",
    "tango write_attributes": DEV + "dev.write_attributes([('a', 1)])\n",
    "tango poll": DEV + "dev.poll_attribute('Current', 1000)\n",
    "tango lock": DEV + "dev.lock()\n",
    "tango database": "import tango\ntango.Database().put_device_property('a/b/c', {'x': 1})\n",
    "tango group": "import tango\ng = tango.Group('g')\ng.write_attribute_asynch('x', 1)\n",
    "tango attribute proxy": "import tango\ntango.AttributeProxy('a/b/c/x').set_config(cfg)\n",
    "tango dict comprehension": (
        "import tango\ndevs = {n: tango.DeviceProxy(n) for n in names}\ndevs['x'].Init()\n"
    ),
    "pytango alias": "import PyTango\nPyTango.DeviceProxy('a/b/c').Init()\n",
    "cothread": "from cothread.catools import caput\ncaput('X', 1)\n",
    "cothread module": "import cothread.catools as ca\nca.caput('X', 1)\n",
    "aioca": "import aioca\naioca.caput('X', 1)\n",
    "ophyd put": "import ophyd\nophyd.EpicsSignal('X').put(1)\n",
    "ophyd set": "from ophyd import EpicsMotor\nm = EpicsMotor('M1', name='m')\nm.set(3)\n",
    "ophyd unknown": "from ophyd.sim import motor\nmotor.move(1)\n",
    "bluesky": (
        "from bluesky import RunEngine\nfrom bluesky.plans import scan\nRE = RunEngine()\n"
        "RE(scan([det], motor, 0, 1, 5))\n"
    ),
    "pydm": "from pydm.data_plugins import plugin_for_address\nplugin_for_address('ca://X')\n",
    "pcaspy": "from pcaspy import SimpleServer\nSimpleServer().createPV('X:', {})\n",
    "softioc": "from softioc import builder\nbuilder.aOut('X', initial_value=1)\n",
    "pvaccess": "import pvaccess\npvaccess.Channel('X').putFloat(1.0)\n",
    "runtime private": RT + "rt._call('write', {'name': 'X', 'value': 1})\n",
    "runtime private from": "from osprey_core.sandbox.runtime import _call\n_call('write', {})\n",
    "subclass of PV": "import epics\nclass P(epics.PV):\n    pass\nP('X').put(1)\n",
    "subclass unknown method": "import epics\nclass P(epics.PV):\n    pass\nP('X').restore()\n",
    "subclass of DeviceProxy": (
        "import tango\nclass D(tango.DeviceProxy):\n    pass\nD('a').Init()\n"
    ),
    "list of PVs by map": (
        "import epics\npvs = list(map(epics.PV, names))\nfor p in pvs:\n    p.put(0)\n"
    ),
    "with PV": "import epics\nwith epics.PV('X') as p:\n    p.put(1)\n",
    "in comprehension": (
        "import epics\npvs = [epics.PV(n) for n in 'AB']\n[p.put(1) for p in pvs]\n"
    ),
    "in generator": "import epics\nany(p.put(1) for p in [epics.PV('A')])\n",
    "in dict comprehension": (
        "import epics.autosave\nr = {f: epics.autosave.restore_pvs(f) for f in files}\n"
    ),
    "in lambda": "import epics.autosave\nf = lambda n: epics.autosave.restore_pvs(n)\n",
    "lambda parameter": "import epics\nf = lambda pv: pv.put(1)\nf(epics.PV('X'))\n",
    "lambda over map": "import epics\npvs = [epics.PV('A')]\nlist(map(lambda p: p.put(1), pvs))\n",
    "lambda returning it": "import epics.autosave as a\nf = (lambda: a.restore_pvs)()\nf('x')\n",
    "function parameter": (
        "import epics.autosave\ndef go(module):\n    module.restore_pvs('f')\ngo(epics.autosave)\n"
    ),
    "function keyword parameter": (
        "import tango\ndef go(dev=None):\n    dev.Init()\ngo(dev=tango.DeviceProxy('a/b/c'))\n"
    ),
    "function starred arguments": (
        "import epics\ndef go(a, b):\n    b.put(1)\ngo(*[epics.PV('A'), epics.PV('B')])\n"
    ),
    "function default": "import epics\ndef go(*, mod=epics):\n    mod.caput('X', 1)\n",
    "function returning it": (
        "import epics\ndef get():\n    return epics.autosave.restore_pvs\nget()('f')\n"
    ),
    "function returning its default": (
        "import epics\ndef g(m=epics):\n    return m\ng().autosave.restore_pvs('f')\n"
    ),
    "function in thread": (
        "import threading, epics\ndef go(pv):\n    pv.put(1)\n"
        "threading.Thread(target=go, args=(epics.PV('X'),)).start()\n"
    ),
    "function defined before import": (
        "def go():\n    epics.autosave.restore_pvs('f')\nimport epics.autosave\ngo()\n"
    ),
    "function sets a global": (
        "import epics\ndef setup():\n    global pv\n    pv = epics.PV('X')\nsetup()\npv.put(1)\n"
    ),
    "method": (
        "import epics\nclass C:\n    def go(self):\n        epics.autosave.restore_pvs('x')\n"
        "C().go()\n"
    ),
    "nested attribute chain": "import epics\nepics.autosave.restore_pvs.__call__('f')\n",
    "decorator": "import epics.autosave\n@epics.autosave.restore_pvs\ndef f():\n    pass\n",
    "stored in a class": (
        "import epics.autosave\nclass C:\n    f = epics.autosave.restore_pvs\nC.f('x')\n"
    ),
    "stored in an attribute": (
        "import epics.autosave\nclass C:\n    def __init__(self):\n"
        "        self.f = epics.autosave.restore_pvs\nC().f('x')\n"
    ),
    "stored in an item": (
        "import epics.autosave\nd = {}\nd['k'] = epics.autosave.restore_pvs\nd['k']('x')\n"
    ),
    "constructor of a local class": (
        "import tango\nclass Ctl:\n    def __init__(self, dev):\n        dev.Init()\n"
        "Ctl(tango.DeviceProxy('x'))\n"
    ),
    "method of a local class": (
        "import epics\nclass Ctl:\n    def set(self, pv, v):\n        pv.put(v)\n"
        "c = Ctl()\nc.set(epics.PV('X'), 1)\n"
    ),
    "inherited method": (
        "import epics\nclass A:\n    def set(self, pv):\n        pv.put(1)\nclass B(A):\n"
        "    pass\nB().set(epics.PV('X'))\n"
    ),
    "method passed to map": (
        "import epics\nclass C:\n    def go(self, m):\n        m.autosave.restore_pvs('f')\n"
        "list(map(C().go, [epics]))\n"
    ),
}


@pytest.mark.parametrize("code", UNKNOWN_CONTROL_CALLS.values(), ids=UNKNOWN_CONTROL_CALLS.keys())
def test_unknown_control_system_calls_fail_closed_as_writes(code: str) -> None:
    analysis = analyze(code)
    assert analysis.writes, analysis.findings
    assert not analysis.parse_error


def test_unknown_control_call_names_its_line_and_has_no_target_list() -> None:
    analysis = run(
        """\
        from epics.autosave import restore_pvs

        restore_pvs("machine.sav")
        """
    )
    (finding,) = [f for f in analysis.findings if f.category is Category.CONTROL_WRITE]
    assert finding.line == 3
    assert finding.symbol == "epics.autosave.restore_pvs"
    assert "not a known read" in finding.reason
    assert analysis.write_targets is None


# A rebinding in a branch that may not run must not hide what a name stands for.
BRANCHES = {
    "if": "import epics\nif False:\n    epics = None\nepics.caput('X', 1)\n",
    "else": "import epics\nif x:\n    pass\nelse:\n    epics = None\nepics.caput('X', 1)\n",
    "try": (
        "try:\n    import epics\nexcept ImportError:\n    epics = None\n"
        "epics.autosave.restore_pvs('f')\n"
    ),
    "while": "import epics\nwhile False:\n    epics = 1\nepics.caput('X', 1)\n",
    "for": "import epics\nfor _ in []:\n    epics = 1\nepics.caput('X', 1)\n",
    "match": "import epics\nmatch x:\n    case 1:\n        epics = 1\nepics.caput('X', 1)\n",
    "function local": "import epics\ndef f():\n    epics = 1\nf()\nepics.caput('X', 1)\n",
}


@pytest.mark.parametrize("code", BRANCHES.values(), ids=BRANCHES.keys())
def test_rebinding_in_a_branch_does_not_hide_a_write(code: str) -> None:
    assert analyze(code).writes, analyze(code).findings


KNOWN_READS = {
    "caget_many": "import epics\nepics.caget_many(['A', 'B'])\n",
    "cainfo": "import epics\nepics.cainfo('A')\n",
    "pv metadata": PV + "pv.wait_for_connection()\nc = pv.get_ctrlvars()\nt = pv.get_timevars()\n",
    "pv properties": PV + "print(pv.units, pv.precision, pv.severity, pv.timestamp)\n",
    "pv value method": PV + "print(pv.value.mean(), pv.get(as_numpy=True).std())\n",
    "pv callbacks": PV + "pv.add_callback(print)\npv.clear_callbacks()\n",
    "camonitor": "import epics\nepics.camonitor('A', callback=print)\nepics.poll()\n",
    "ca low level": (
        "import epics.ca as ca\nch = ca.create_channel('A')\nca.connect_channel(ch)\n"
        "v = ca.get(ch)\nca.pend_event(0.1)\n"
    ),
    "dbr constants": "import epics\nt = epics.dbr.DOUBLE\n",
    "caget comprehension": "import epics\nvals = {n: epics.caget(n) for n in names}\n",
    "motor readback": (
        "import epics\nm = epics.Motor('M1')\nprint(m.get_position(), m.within_limits(3))\n"
    ),
    "caproto": (
        "from caproto.threading.client import Context\nctx = Context()\n"
        "a, b = ctx.get_pvs('A', 'B')\na.wait_for_connection()\nprint(a.read().data)\n"
        "sub = b.subscribe()\n"
    ),
    "p4p": (
        "from p4p.client.thread import Context\nfrom p4p.nt import NTScalar\n"
        "ctx = Context('pva')\nprint(ctx.get('A'))\nctx.close()\nt = NTScalar('d')\n"
    ),
    "tango passive": (
        DEV + "print(dev.state(), dev.status(), dev.ping(), dev.get_attribute_list())\n"
        "cfg = dev.get_attribute_config('Current')\nq = dev.attribute_query('Current')\n"
    ),
    "tango reads": (
        DEV + "v = dev.read_attribute('Current').value\nvs = dev.read_attributes(['a'])\n"
    ),
    "tango enums": DEV + "ok = dev.state() == tango.DevState.ON\n",
    "tango exception": DEV + "try:\n    dev.ping()\nexcept tango.DevFailed as e:\n    print(e)\n",
    "tango database": (
        "import tango\ndb = tango.Database()\nnames = db.get_device_exported('sr/*')\n"
    ),
    "tango attribute proxy": "import tango\nprint(tango.AttributeProxy('a/b/c/x').read().value)\n",
    "tango group": "import tango\ng = tango.Group('g')\ng.add('a/*')\nr = g.read_attribute('x')\n",
    "cothread": "from cothread.catools import caget\nprint(caget('A'))\n",
    "ophyd read": (
        "import ophyd\ns = ophyd.EpicsSignalRO('A', name='a')\nprint(s.get(), s.read())\n"
    ),
    "runtime": (
        "from osprey_core.sandbox.runtime import list_channels, read_channel, WriteBlocked\n"
        "print(list_channels('SR*'), read_channel('A'))\n"
    ),
    "runtime in executor": (
        "from concurrent.futures import ThreadPoolExecutor\nwith ThreadPoolExecutor() as ex:\n"
        "    vals = list(ex.map(read_channel, ['A', 'B']))\n"
    ),
    "function reading a PV": PV + "def show(p):\n    return p.get() * 2\nprint(show(pv))\n",
    "method reading a PV": (
        PV + "class Reader:\n    def read(self, p):\n        return p.get()\n"
        "print(Reader().read(pv))\n"
    ),
    "tango value stored": DEV + "results = {}\nresults['current'] = dev.Current\n",
    "tango value in an attribute": (
        DEV + "class C:\n    def __init__(self, d):\n        self.current = d.Current\nC(dev)\n"
    ),
    "constant in a class": "import epics\nclass C:\n    kind = epics.dbr.DOUBLE\n",
}


@pytest.mark.parametrize("code", KNOWN_READS.values(), ids=KNOWN_READS.keys())
def test_known_reads_and_harmless_calls_are_not_writes(code: str) -> None:
    analysis = analyze(code)
    assert not analysis.writes, analysis.findings
    assert not analysis.dangerous, analysis.findings
    assert analysis.write_targets == frozenset()


ANALYSIS_CODE = {
    "numpy and matplotlib": (
        "import numpy as np\nimport matplotlib.pyplot as plt\nfig, ax = plt.subplots()\n"
        "ax.plot(np.arange(3))\nplt.savefig('a.png')\n"
    ),
    "pandas apply": (
        "import pandas as pd\ndf = pd.DataFrame({'a': [1]})\n"
        "df.apply(lambda r: r['a'] * 2, axis=1)\nprint(df.groupby('a').agg('mean'))\n"
    ),
    "archiver history": (
        "from datetime import timedelta\nhistory = read_archiver(['A'], timedelta(hours=1))\n"
        "for name, samples in history.items():\n    print(name, len(samples))\n"
    ),
    "decorator": "import functools\n@functools.lru_cache\ndef f(x):\n    return x\n",
    "local class": "class C:\n    def put(self, v):\n        self.v = v\nC().put(1)\n",
    "helper functions": (
        "def fit(xs, ys):\n    return sum(x * y for x, y in zip(xs, ys))\n"
        "values = read_channels(['A', 'B'])\nprint(fit(list(values), [1, 2]))\n"
    ),
}


@pytest.mark.parametrize("code", ANALYSIS_CODE.values(), ids=ANALYSIS_CODE.keys())
def test_plain_analysis_code_needs_no_approval(code: str) -> None:
    analysis = analyze(code)
    assert not (analysis.writes or analysis.dangerous), analysis.findings


def test_runtime_api_classification_is_unchanged() -> None:
    analysis = run(
        """\
        values = read_channels(["A", "B"])
        history = read_archiver("A", start)
        write_channel("C", 1.5)
        """
    )
    assert write_lines(analysis) == [3]
    assert analysis.write_targets == frozenset({"C"})
    reads = [f.symbol for f in analysis.findings if f.category is Category.CONTROL_READ]
    assert reads == ["read_channels", "read_archiver"]


def test_a_write_in_a_function_body_is_planned_once() -> None:
    analysis = run(
        """\
        def apply(value):
            write_channel("A", value)
        apply(1)
        apply(2)
        """
    )
    assert [(w.line, w.channel) for w in analysis.planned_writes] == [(2, "A")]


# ---- item 7: a Tango attribute read is a read, not a command


def test_tango_attribute_read_is_a_read_and_its_variable_is_not_flagged() -> None:
    analysis = run(
        """\
        import tango
        dev = tango.DeviceProxy("sr/dcct/1")
        current = dev.Current
        print(current * 2)
        total = current + 1
        print(f"{current:.3f}", total)
        """
    )
    assert not analysis.writes, analysis.findings
    assert not analysis.dangerous
    (finding,) = analysis.findings
    assert finding.category is Category.CONTROL_READ
    assert finding.line == 3
    assert "Current" in finding.reason


TANGO_READS = {
    "print": DEV + "print(dev.Current, dev.Voltage)\n",
    "method of the value": DEV + "x = dev.Spectrum.mean()\n",
    "max of values": DEV + "print(max(dev.Current, dev.Voltage))\n",
    "list of values": DEV + "values = [dev.Current, dev.Voltage]\nprint(values[0] * 2)\n",
    "getattr literal": DEV + "x = getattr(dev, 'Current')\nprint(x)\n",
    "inline proxy": "import tango\nprint(tango.DeviceProxy('a/b/c').Current)\n",
    "in a function": DEV + "def show():\n    return dev.Current * 2\nprint(show())\n",
    "function parameter": (
        DEV + "def read(d):\n    return d.Current\nprint(read(dev) * 2)\n"
    ),
    "comprehension": DEV + "xs = [dev.Current for _ in range(3)]\n",
}


@pytest.mark.parametrize("code", TANGO_READS.values(), ids=TANGO_READS.keys())
def test_tango_attribute_reads_are_not_writes(code: str) -> None:
    analysis = analyze(code)
    assert not analysis.writes, analysis.findings
    assert analysis.reads


TANGO_WRITES = {
    "attribute assignment": DEV + "dev.Current = 5\n",
    "augmented assignment": DEV + "dev.Current += 1\n",
    "setattr": DEV + "setattr(dev, 'Current', 5)\n",
    "command method": DEV + "dev.Init()\n",
    "command_inout": DEV + "dev.command_inout('Init')\n",
    "command bound then called": DEV + "init = dev.Init\ninit()\n",
    "getattr then called": DEV + "getattr(dev, 'Init')()\n",
    "__getattr__ then called": DEV + "dev.__getattr__('Init')()\n",
    "command in thread": DEV + "import threading\nthreading.Thread(target=dev.Init).start()\n",
    "commands in dict": DEV + "cmds = {'on': dev.On, 'off': dev.Off}\ncmds['on']()\n",
    "command in lambda": DEV + "f = lambda: dev.Init()\n",
    "command in comprehension": DEV + "[d.Init() for d in [dev]]\n",
}


@pytest.mark.parametrize("code", TANGO_WRITES.values(), ids=TANGO_WRITES.keys())
def test_tango_attribute_writes_and_commands_are_writes(code: str) -> None:
    assert analyze(code).writes, analyze(code).findings


def test_tango_command_finding_names_the_call_line() -> None:
    analysis = run(DEV + "current = dev.Current\ninit = dev.Init\nprint(current)\ninit()\n")
    assert write_lines(analysis) == [6]


# ---- the analyzer stays fast and bounded


def test_large_snippets_analyze_quickly() -> None:
    block = textwrap.dedent(
        """\
        values = read_channels(["A", "B"])
        pv = epics.PV("X")
        dev = tango.DeviceProxy("a/b/c")
        total = sum(v * 2 for v in values.values()) + dev.Current + pv.get()
        def f(p):
            return p.get() + total
        print(f(pv), [x for x in range(10) if x % 2])
        """
    )
    code = "import epics\nimport tango\n" + block * 300
    started = time.perf_counter()
    analysis = analyze(code)
    assert time.perf_counter() - started < 10.0
    assert not analysis.writes


def test_following_calls_is_bounded_and_fails_closed() -> None:
    functions = "".join(f"def f{i}(p):\n    return p.get()\nf{i}(pv)\n" for i in range(300))
    analysis = analyze(PV + functions)
    assert analysis.dangerous
    assert any("too many calls" in f.reason for f in analysis.findings)
