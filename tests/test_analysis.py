"""Static analyzer: each construct of the safety model, including the tricks regexes missed."""

from __future__ import annotations

import json
import textwrap

import pytest

from osprey_core.analysis import Analysis, Category, Severity, analyze


def run(code: str) -> Analysis:
    return analyze(textwrap.dedent(code))


def writes(analysis: Analysis) -> list[int]:
    return [f.line for f in analysis.findings if f.category is Category.CONTROL_WRITE]


def dangers(analysis: Analysis) -> dict[str, Severity]:
    return {f.reason: f.severity for f in analysis.findings if f.category is Category.DANGEROUS}


DEV = "import tango\nd = tango.DeviceProxy('a/b/c')\n"
RT = "from osprey_core.sandbox.runtime import "

WRITE_CASES = {
    "caput": "import epics\nepics.caput('X', 1)\n",
    "import as": "import epics as e\ne.caput('X', 1)\n",
    "from import as": "from epics import caput as c\nc('X', 1)\n",
    "submodule import": "import epics.ca\nepics.ca.put(1, 2)\n",
    "submodule import as": "import epics.ca as ca\nca.put(1, 2)\n",
    "assignment chain": "import epics as e\nf = e.caput\ng = f\ng('X', 1)\n",
    "tuple unpacking": "import epics\na, b = epics.caget, epics.caput\nb('X', 1)\n",
    "star import": "from epics import *\ncaput('X', 1)\n",
    "pv put": "from epics import PV\npv = PV('X')\npv.put(1)\n",
    "get_pv put": "import epics\np = epics.get_pv('X')\np.put(1)\n",
    "pv module path": "import epics.pv\np = epics.pv.PV('X')\np.put(1)\n",
    "pv value": "import epics\npv = epics.PV('X')\npv.value = 3\n",
    "pv value augmented": "import epics\npv = epics.PV('X')\npv.value += 3\n",
    "setattr pv": "import epics\npv = epics.PV('X')\nsetattr(pv, 'value', 3)\n",
    "inline pv": "import epics\nepics.PV('X').put(1)\n",
    "pv list": "import epics\npvs = [epics.PV(n) for n in 'AB']\nfor p in pvs:\n    p.put(1)\n",
    "caproto sync": "from caproto.sync.client import write\nwrite('X', 1)\n",
    "caproto threading": (
        "from caproto.threading.client import Context\nctx = Context()\n"
        "x, = ctx.get_pvs('X')\nx.write(1)\n"
    ),
    "caproto pyepics compat": "from caproto.threading.pyepics_compat import caput\ncaput('X', 1)\n",
    "p4p": "from p4p.client.thread import Context\nc = Context('pva')\nc.put('X', 1)\n",
    "p4p with": (
        "from p4p.client.thread import Context\nwith Context('pva') as c:\n    c.put('X', 1)\n"
    ),
    "tango write_attribute": DEV + "d.write_attribute('x', 1)\n",
    "tango asynch": DEV + "d.write_attribute_asynch('x', 1)\n",
    "tango write_read": DEV + "d.write_read_attribute('x', 1)\n",
    "tango command": DEV + "d.command_inout('On')\n",
    "tango command method": DEV + "d.On()\n",
    "tango attribute set": DEV + "d.Current = 5\n",
    "pytango": "import PyTango as pt\nd = pt.DeviceProxy('a/b/c')\nd.write_attribute('x', 1)\n",
    "runtime import": RT + "write_channel\nwrite_channel('X', 1)\n",
    "runtime alias": RT + "write_channels as w\nw({'X': 1})\n",
    "runtime module": "import osprey_core.sandbox.runtime as rt\nrt.write_channel('X', 1)\n",
    "runtime bare": "x = 1\nwrite_channel('X', 1)\n",
    "getattr literal": "import epics\ngetattr(epics, 'caput')('X', 1)\n",
    "getattr concat": "import epics\ngetattr(epics, 'ca' + 'put')('X', 1)\n",
    "getattr variable": "import epics\nname = input()\ngetattr(epics, name)('X', 1)\n",
    "dunder import concat": "m = __import__('epi' + 'cs')\nm.caput('X', 1)\n",
    "import_module": "import importlib\nm = importlib.import_module('epics')\nm.caput('X', 1)\n",
    "sys modules": "import sys\nsys.modules['epics'].caput('X', 1)\n",
    "monkeypatch module": "import epics\nepics.caput = print\n",
    "popen caput": "import os\nos.popen('caput X 1')\n",
    "subprocess list": "import subprocess\nsubprocess.run(['caput', 'X', '1'])\n",
    "subprocess pvput": "import subprocess as sp\nsp.check_call('pvput X 1', shell=True)\n",
    "exec string": "exec(\"import epics\\nepics.caput('X', 1)\")\n",
}


@pytest.mark.parametrize("code", WRITE_CASES.values(), ids=WRITE_CASES.keys())
def test_writes_are_flagged(code: str) -> None:
    analysis = analyze(code)
    assert analysis.writes, analysis.findings
    assert not analysis.parse_error


REFERENCE_CASES = {
    "map": "import epics\nlist(map(epics.caput, ['A'], [1]))\n",
    "partial": "import functools\nfrom epics import caput\nf = functools.partial(caput, 'X')\n",
    "thread": (
        "import threading\nfrom epics import caput as c\n"
        "threading.Thread(target=c, args=('X', 1)).start()\n"
    ),
    "dict value": "import epics\nactions = {'set': epics.caput}\n",
    "list element": "import epics\nactions = [epics.caput]\n",
    "return": "import epics\ndef pick():\n    return epics.caput\n",
    "bound method": "import epics\npv = epics.PV('X')\ncb = pv.put\n",
    "runtime reference": RT + "write_channel\nfs = [write_channel]\n",
    "call dunder": "import epics\nepics.caput.__call__('X', 1)\n",
}


@pytest.mark.parametrize("code", REFERENCE_CASES.values(), ids=REFERENCE_CASES.keys())
def test_references_are_writes(code: str) -> None:
    analysis = analyze(code)
    assert any(
        f.category is Category.CONTROL_WRITE and f.reason.startswith("reference to")
        for f in analysis.findings
    ), analysis.findings


def test_reference_line_and_symbol() -> None:
    analysis = run(
        """\
        import epics as e
        import threading

        t = threading.Thread(target=e.caput)
        """
    )
    (finding,) = [f for f in analysis.findings if f.category is Category.CONTROL_WRITE]
    assert finding.line == 4
    assert finding.symbol == "epics.caput"
    assert finding.reason == "reference to epics.caput"
    assert finding.severity is Severity.CRITICAL


def test_write_line_numbers() -> None:
    analysis = run(
        """\
        from epics import PV, caget
        pv = PV("SR:C")
        print(caget("SR:C"))
        pv.value = 2
        pv.put(3)
        """
    )
    assert writes(analysis) == [4, 5]
    assert [f.line for f in analysis.findings if f.category is Category.CONTROL_READ] == [3]


HTTP_CASES = {
    "requests post": "import requests\nrequests.post('http://lv:8001/SR/WriteValue', json={})\n",
    "requests put": "import requests as r\nr.put('http://lv/x', data='1')\n",
    "httpx patch": "import httpx\nhttpx.patch('http://lv/x')\n",
    "session post": "import requests\ns = requests.Session()\ns.post('http://lv/x')\n",
    "requests.request POST": "import requests\nrequests.request('POST', 'http://lv/x')\n",
    "urlopen data": "from urllib.request import urlopen\nurlopen('http://lv/x', data=b'1')\n",
    "urllib Request": (
        "import urllib.request\nurllib.request.Request('http://lv/x', method='PUT')\n"
    ),
    "http.client": (
        "import http.client\nc = http.client.HTTPConnection('lv')\nc.request('POST', '/x')\n"
    ),
}


@pytest.mark.parametrize("code", HTTP_CASES.values(), ids=HTTP_CASES.keys())
def test_http_mutations(code: str) -> None:
    analysis = analyze(code)
    found = [f for f in analysis.findings if f.category is Category.CONTROL_WRITE]
    assert found, analysis.findings
    assert found[0].reason == "HTTP request that can change state"
    assert found[0].severity is Severity.HIGH


@pytest.mark.parametrize(
    "code",
    [
        "import requests\nrequests.get('http://lv/x')\n",
        "from urllib.request import urlopen\nurlopen('http://lv/x')\n",
        "import requests\nrequests.request('GET', 'http://lv/x')\n",
    ],
)
def test_http_reads_are_not_writes(code: str) -> None:
    assert not analyze(code).writes


READ_CASES = {
    "caget": "import epics\nprint(epics.caget('X'))\n",
    "pv get": "from epics import PV\npv = PV('X')\nv = pv.get()\n",
    "pv value": "from epics import PV\npv = PV('X')\nv = pv.value\n",
    "caproto read": "from caproto.sync.client import read\nread('X')\n",
    "p4p get": "from p4p.client.thread import Context\nContext('pva').get('X')\n",
    "tango read": "import tango\ntango.DeviceProxy('a/b/c').read_attribute('x')\n",
    "runtime read": RT + "read_channel\nread_channel('X')\n",
    "runtime reads": "read_channels(['X', 'Y'])\nread_archiver('X')\n",
}


@pytest.mark.parametrize("code", READ_CASES.values(), ids=READ_CASES.keys())
def test_plain_reads_are_only_reads(code: str) -> None:
    analysis = analyze(code)
    assert analysis.reads
    assert not analysis.writes
    assert not analysis.dangerous
    assert all(f.severity is Severity.INFO for f in analysis.findings)


DANGEROUS_CASES = {
    "exec": ("exec('x = 1')\n", Severity.CRITICAL),
    "eval": ("eval('1 + 1')\n", Severity.CRITICAL),
    "compile": ("compile(src, 'f', 'exec')\n", Severity.CRITICAL),
    "exec base64": (
        "import base64\nexec(base64.b64decode('cHJpbnQoMSk='))\n",
        Severity.CRITICAL,
    ),
    "builtins exec": ("import builtins\nbuiltins.exec('1')\n", Severity.CRITICAL),
    "__import__": ("m = __import__('os')\n", Severity.CRITICAL),
    "import_module": ("import importlib\nimportlib.import_module(name)\n", Severity.CRITICAL),
    "importlib alias": (
        "from importlib import import_module as im\nim('os')\n",
        Severity.CRITICAL,
    ),
    "getattr non-literal": ("getattr(obj, name)\n", Severity.HIGH),
    "setattr non-literal": ("setattr(obj, name, 1)\n", Severity.HIGH),
    "getattr dunder": ("getattr(obj, '__globals__')\n", Severity.CRITICAL),
    "vars": ("vars()\n", Severity.HIGH),
    "globals": ("globals()['x']\n", Severity.HIGH),
    "locals": ("locals()\n", Severity.HIGH),
    "__dict__": ("obj.__dict__\n", Severity.CRITICAL),
    "__subclasses__": ("().__class__.__bases__[0].__subclasses__()\n", Severity.CRITICAL),
    "__globals__": ("f.__globals__\n", Severity.CRITICAL),
    "__builtins__": ("__builtins__['eval']('1')\n", Severity.CRITICAL),
    "__code__": ("f.__code__ = g.__code__\n", Severity.CRITICAL),
    "subprocess": ("import subprocess\nsubprocess.Popen(['ls'])\n", Severity.CRITICAL),
    "subprocess from": ("from subprocess import run as r\nr('ls')\n", Severity.CRITICAL),
    "os.system": ("import os\nos.system('ls')\n", Severity.CRITICAL),
    "os.popen": ("import os\nos.popen('ls')\n", Severity.CRITICAL),
    "os.execv": ("import os\nos.execv('/bin/sh', ['sh'])\n", Severity.CRITICAL),
    "os.spawnl": ("import os\nos.spawnl(os.P_WAIT, '/bin/ls')\n", Severity.CRITICAL),
    "os.fork": ("import os\nos.fork()\n", Severity.CRITICAL),
    "os.posix_spawn": ("import os\nos.posix_spawn('/bin/ls', [], {})\n", Severity.CRITICAL),
    "pty": ("import pty\npty.spawn('sh')\n", Severity.CRITICAL),
    "ctypes": ("import ctypes\nctypes.CDLL(None)\n", Severity.CRITICAL),
    "cffi": ("from cffi import FFI\nFFI()\n", Severity.CRITICAL),
    "pickle": ("import pickle\npickle.loads(b'')\n", Severity.HIGH),
    "marshal": ("import marshal\nmarshal.loads(b'')\n", Severity.HIGH),
    "shelve": ("import shelve\nshelve.open('x')\n", Severity.HIGH),
    "socket": ("import socket\nsocket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n", Severity.HIGH),
    "breakpoint": ("breakpoint()\n", Severity.CRITICAL),
    "reference to system": ("import os\nlist(map(os.system, ['ls']))\n", Severity.CRITICAL),
}


@pytest.mark.parametrize(
    ("code", "severity"), DANGEROUS_CASES.values(), ids=DANGEROUS_CASES.keys()
)
def test_dangerous_constructs(code: str, severity: Severity) -> None:
    analysis = analyze(code)
    assert analysis.dangerous, analysis.findings
    assert severity in dangers(analysis).values(), analysis.findings
    assert not analysis.writes


def test_getattr_concat_is_dangerous_and_a_write() -> None:
    analysis = run("import epics\ngetattr(epics, 'ca' + 'put')('X', 1)\n")
    assert dangers(analysis)["getattr with a non-literal attribute name"] is Severity.HIGH
    reasons = {f.reason for f in analysis.findings if f.category is Category.CONTROL_WRITE}
    assert "call to epics.caput" in reasons
    assert (
        "dynamic attribute access on a control-system module may reach a write function"
        in reasons
    )


def test_getattr_unknown_name_on_plain_object_is_not_a_write() -> None:
    analysis = run("import numpy as np\ngetattr(np, name)(1)\n")
    assert analysis.dangerous
    assert not analysis.writes


def test_popen_caput_is_shellout_and_write() -> None:
    analysis = run("import os\n\nos.popen('caput SR:C 1')\n")
    assert dangers(analysis)["shell-out via os.popen"] is Severity.CRITICAL
    assert writes(analysis) == [3]


def test_exec_of_literal_code_reports_inner_findings_at_call_line() -> None:
    analysis = run("x = 1\nexec('import epics; epics.caput(\"X\", 1)')\n")
    assert writes(analysis) == [2]
    assert dangers(analysis)["exec of dynamic code"] is Severity.CRITICAL


def test_encoding_cookie_latin1_refused() -> None:
    analysis = analyze("# -*- coding: latin-1 -*-\nx = 1\n")
    assert analysis.parse_error
    assert analysis.findings[0].severity is Severity.CRITICAL
    assert "iso-8859-1" in analysis.findings[0].reason


def test_encoding_cookie_on_second_line_refused() -> None:
    assert analyze("#!/usr/bin/env python\n# coding=utf-7\nx = 1\n").parse_error


@pytest.mark.parametrize("cookie", ["# coding: utf-8\n", "# -*- coding: utf8 -*-\n"])
def test_utf8_cookie_accepted(cookie: str) -> None:
    analysis = analyze(cookie + "x = 1\n")
    assert analysis.findings == []


def test_unknown_encoding_refused() -> None:
    assert analyze("# coding: no-such-codec\nx = 1\n").parse_error


def test_syntax_error_fails_closed() -> None:
    analysis = analyze("import epics\nepics.caput('X', \n", filename="job.py")
    assert analysis.parse_error
    (finding,) = analysis.findings
    assert finding.category is Category.PARSE_ERROR
    assert finding.severity is Severity.CRITICAL
    assert finding.reason.startswith("job.py:")


def test_null_byte_fails_closed() -> None:
    assert analyze("x = 1\x00\nimport epics\n").parse_error


def test_deep_recursion_fails_closed() -> None:
    assert analyze("x = " + "1 + " * 100_000 + "1\n").parse_error


def test_deep_nesting_the_parser_accepts_fails_closed_or_analyzes() -> None:
    code = "x = " + "-" * 5000 + "1\n"
    analysis = analyze(code)
    assert analysis.parse_error or analysis.findings == []


NEGATIVE_CASES = {
    "comment": "# epics.caput('X', 1) would set it\nx = 1\n",
    "string": "s = \"epics.caput('X', 1)\"\nprint(s)\n",
    "docstring": 'def f():\n    """Calls caput and write_channel, os.system."""\n    return 1\n',
    "fstring": "name = 'X'\nprint(f'caput {name} 1')\n",
    "numpy matplotlib": (
        "import numpy as np\nimport matplotlib.pyplot as plt\n"
        "x = np.linspace(0, 1, 100)\ny = np.sin(x)\nfig, ax = plt.subplots()\n"
        "ax.plot(x, y)\nfig.savefig('plot.png')\nprint(y.mean(), x.__len__())\n"
    ),
    "class init": (
        "class A(Exception):\n    def __init__(self, m):\n        super().__init__(m)\n"
        "print(A.__name__)\n"
    ),
    "user put method": "class C:\n    def put(self, v):\n        self.v = v\nC().put(1)\n",
    "shadowed name": "code = 'abc'\nprint(code.upper())\nsocket = 1\n",
    "literal getattr": "import numpy as np\nf = getattr(np, 'mean')\n",
}


@pytest.mark.parametrize("code", NEGATIVE_CASES.values(), ids=NEGATIVE_CASES.keys())
def test_non_code_and_plain_analysis_produce_nothing(code: str) -> None:
    assert analyze(code).findings == []


def test_reassignment_stops_tracking() -> None:
    analysis = run("import epics\nf = epics.caput\nf = print\nf('hello')\n")
    assert writes(analysis) == [2]


def test_to_json_round_trips() -> None:
    analysis = run("import epics\nepics.caput('X', 1)\n")
    data = json.loads(json.dumps(analysis.to_json()))
    assert data["writes"] is True
    assert data["findings"][0] == {
        "category": "control_write",
        "severity": "critical",
        "line": 2,
        "column": 0,
        "reason": "call to epics.caput",
        "symbol": "epics.caput",
    }


# ---- planned writes: what the broker lets a write run touch


@pytest.mark.parametrize(
    ("source", "targets"),
    [
        ('write_channel("MAG:HCM01:CURRENT:SP", 1.5)', {"MAG:HCM01:CURRENT:SP"}),
        ('write_channel(name="A", value=2)', {"A"}),
        ('write_channels({"A": 1, "B": 2})', {"A", "B"}),
        ('write_channels([("A", 1), ("B", x)])', {"A", "B"}),
        ('from osprey_core.sandbox.runtime import write_channel as w\nw("A", 1)', {"A"}),
        ('read_channel("A")\nprint("write_channel(\'B\', 1)")', set()),
    ],
)
def test_literal_runtime_writes_name_their_channels(source: str, targets: set[str]) -> None:
    assert analyze(source).write_targets == frozenset(targets)


@pytest.mark.parametrize(
    "source",
    [
        'name = "A"\nwrite_channel(name, 1)',
        'write_channel(prefix + ":SP", 1)',
        'write_channels(values)',
        'list(map(write_channel, ["A"], [1]))',
        'w = write_channel\nw("A", 1)',
        'exec("write_channel(\'A\', 1)")',
        'def f(:\n    pass',
    ],
)
def test_unpredictable_writes_have_no_target_list(source: str) -> None:
    assert analyze(source).write_targets is None


def test_planned_values_are_literals_or_marked_computed() -> None:
    planned = analyze('write_channels({"A": 1.5, "B": level * 2})').planned_writes
    assert [(w.channel, w.value, w.computed) for w in planned] == [
        ("A", 1.5, False), ("B", None, True)]
    assert analyze('write_channel("A", 3)').to_json()["write_targets"] == ["A"]
