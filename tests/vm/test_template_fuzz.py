"""1,000 fuzzed templates (a tenth under `make test`): each is accepted and brought up and torn
down cleanly, or refused with a one-line error; never a traceback, never residue."""

from __future__ import annotations

import copy
import os
import tomllib

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gadgetd import configfs, ownership, template, templates
from gadgetd.errors import GadgetdError, TemplateError
from gadgetd.supervisor import Supervisor
from tests.vm.test_faults import count

pytestmark = [pytest.mark.vm, pytest.mark.faults]

LOOPBACK = tomllib.loads(
    templates.path("loopback").read_text())

values = st.one_of(
    st.integers(min_value=-2, max_value=70000), st.booleans(), st.text(max_size=12),
    st.sampled_from(["auto", "dummy_udc.0", "gadgetd", "nobody", "root", "in", "out", "bulk",
                     "interrupt", "loopback", "/run/gadgetd/ffs/fz", "/", "relative", "/tmp/fz", "0x409"]),
    st.lists(st.sampled_from(["loop0", "x"]), max_size=3),
)
endpoint = st.fixed_dictionaries({}, optional={
    "direction": st.sampled_from(["in", "out", "sideways"]),
    "transfer": st.sampled_from(["bulk", "interrupt", "iso"]),
    "max_packet": st.integers(0, 2048), "interval": st.integers(0, 300),
    "max_burst": st.integers(-1, 16)})


def _like(old):
    """Mostly a value of the same type (so some templates pass and get brought up), else any."""
    if isinstance(old, bool):
        same = st.booleans()
    elif isinstance(old, int):
        same = st.sampled_from([0, 1, 2, 8, 64, 100, 255, 0x80, 0xC0, 500, 1024, 16384, 0xFFFF])
    elif isinstance(old, str):
        # Users among them: the default, another that exists, root (refused unless allow_root)
        # and one that does not exist (gadgetd-fuzz).
        same = st.sampled_from(["auto", "gadgetd", "nobody", "root", "in", "out", "bulk",
                                "loopback", "fz", "/run/gadgetd/ffs/fz", "gadgetd-fuzz", "blocking",
                                "nonblock"])
    else:
        same = values
    return st.one_of(same, same, same, values)


def _paths(node, prefix=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


@st.composite
def templates(draw):
    doc = copy.deepcopy(LOOPBACK)
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3, 4]))):
        paths = list(_paths(doc))
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["set", "set", "set", "set", "delete", "add", "endpoints"]))
        if action == "set":
            parent[path[-1]] = draw(_like(parent[path[-1]]))
        elif action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["extra", "idVendr", "user", "allow_root", "ep0_open",
                                         "udc"]))] = draw(values)
        elif action == "endpoints" and isinstance(fn := doc.get("function"), dict) and \
                isinstance(fn.get("loop0"), dict):
            fn["loop0"]["endpoint"] = draw(st.lists(endpoint, max_size=20))
    # Never let fuzzed FunctionFS mounts land on the machine's own directories: the others drawn
    # here are outside /run/gadgetd/ffs/ or not plainly spelled, so the parser refuses them.
    for fn in doc.get("function", {}).values() if isinstance(doc.get("function"), dict) else ():
        if isinstance(fn, dict) and isinstance(fn.get("mountpoint"), str) and \
                fn["mountpoint"] not in ("/run/gadgetd/ffs/fz", "/run/gadgetd/ffs/loop0"):
            fn["mountpoint"] = draw(st.sampled_from(["/run/gadgetd/ffs/fz", "relative", "/",
                                                     "/run/gadgetd/ffs", "/run/gadgetd/ffs/../fz",
                                                     "/tmp/fz"]))
    return tomli_w.dumps(doc)


@settings(max_examples=count(1000), deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(text=templates())
def test_fuzzed_template(text):
    try:
        spec = template.parse(text, "fuzz.toml")
    except TemplateError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith("fuzz.toml: ")
        return
    existed = {str(f.mountpoint) for f in spec.functions.values() if f.mountpoint.exists()}
    supervisor = Supervisor(spec)
    supervisor.claim = ownership.claim(spec.name)  # as run() does before bring-up
    try:
        supervisor.bring_up()
        # Serve until every worker is ready (the gadget bound) or one failed: the whole bring-up.
        supervisor.loop.call_later(60, supervisor.loop.stop)
        supervisor.loop.run(until=lambda: supervisor.recovery.all_ready
                            or supervisor.failure is not None)
        if supervisor.failure is not None:
            raise supervisor.failure
    except GadgetdError as exc:
        assert "\n" not in str(exc)
    finally:
        failures = supervisor.tear_down()
        supervisor.claim.release()
        if supervisor.watch is not None:
            supervisor.watch.close()
        supervisor.loop.close()
    assert failures == []
    # A mount point that was there before (a refused "/", say) is not residue.
    assert [x for x in configfs.leftovers(spec)
            if not any(x == f"mount point {p}" for p in existed)] == []
    assert os.listdir(configfs.GADGETS) == []
