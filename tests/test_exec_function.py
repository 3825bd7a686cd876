"""Functions served by other programs (kind exec): the template's keys, and the program's life
under the supervisor's loop (ready once its ep files exist, output logged under the function's
name, SIGKILLed with everything it started) without FunctionFS: a directory stands for the mount."""

import logging
import os
import stat
import subprocess
import sys
import time
from dataclasses import replace

import functionfs
import pytest

from gadgetd import registry, template, templates, wire
from gadgetd.errors import TemplateError
from gadgetd.eventloop import EventLoop
from gadgetd.exec_process import ExecProcess
from gadgetd.functions.exec import listen_environment

HEAD = """
[gadget]
name = "g"
idVendor = 0x1d6b
idProduct = 0x0104
[[config]]
functions = ["mtp"]
[function.mtp]
type = "exec"
mountpoint = "/run/gadgetd/ffs/mtp"
"""


def parse(body):
    return template.parse(HEAD + body, "t.toml")


def refused(body) -> str:
    with pytest.raises(TemplateError) as exc:
        parse(body)
    assert "\n" not in str(exc.value)
    return str(exc.value)


def test_a_program_that_writes_its_own_descriptors_needs_no_interface():
    fn = parse('command = ["/bin/true", "-x"]\nuser = "gadgetd"\n'
               'environment = { UMTPRD_DEBUG = "1" }\nworking_directory = "/tmp"\n'
               ).functions["mtp"]
    assert fn.options == {"command": ("/bin/true", "-x"), "environment": {"UMTPRD_DEBUG": "1"},
                          "working_directory": "/tmp", "open": "program", "descriptors": None,
                          "strings": None, "ready_timeout": 30}
    assert fn.endpoints == ()


@pytest.mark.parametrize("body,problem", [
    ('command = ["true"]\n', "absolute path"),
    ('command = []\n', "non-empty array"),
    ('command = ["/nonexistent/umtprd"]\n', "cannot be run"),
    ('command = ["/etc/passwd"]\n', "executable file"),
    ('command = ["/bin/true"]\nenvironment = { LISTEN_FDS = "1" }\n', "gadgetd's"),
    ('command = ["/bin/true"]\nworking_directory = "/etc/passwd"\n', "must be a directory"),
    ('command = ["/bin/true"]\nopen = "gadgetd"\n', "give [...interface] and endpoints"),
    ('command = ["/bin/true"]\ndescriptors = "/etc/passwd"\nstrings = "/etc/passwd"\n',
     'need open = "gadgetd"'),
    ('command = ["/bin/true"]\nopen = "gadgetd"\ndescriptors = "/etc/passwd"\n',
     "both descriptors and strings"),
    ('command = ["/bin/true"]\nopen = "nobody"\n', "must be one of program, gadgetd"),
])
def test_exec_refusals(body, problem):
    assert problem in refused(body)


def test_a_program_someone_else_could_replace_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # no sticky bit: anyone may swap the program
    program = shared / "prog"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    message = refused(f'command = ["{program}"]\n')
    assert "not trusted" in message and "writable by group or others" in message


def test_gadgetd_opens_from_the_template_or_from_blobs(tmp_path):
    body = ('command = ["/bin/true"]\nopen = "gadgetd"\n[function.mtp.interface]\n'
            '[[function.mtp.endpoint]]\ndirection = "in"\n')
    assert parse(body).functions["mtp"].options["open"] == "gadgetd"
    (tmp_path / "d").write_bytes(b"d")
    (tmp_path / "s").write_bytes(b"s")
    fn = parse(f'command = ["/bin/true"]\nopen = "gadgetd"\ndescriptors = "{tmp_path}/d"\n'
               f'strings = "{tmp_path}/s"\n').functions["mtp"]
    assert (fn.options["descriptors"], fn.options["strings"]) == (f"{tmp_path}/d",
                                                                  f"{tmp_path}/s")


def test_listen_fds_follow_sd_listen_fds():
    assert listen_environment(["ep0", "ep1", "ep2"], 42) == {
        "LISTEN_FDS": "3", "LISTEN_PID": "42", "LISTEN_FDNAMES": "ep0:ep1:ep2"}


@pytest.mark.parametrize("name,function", [("loopback", "loop0"), ("sourcesink", "ss0")])
def test_blobs_are_what_gadgetd_writes_itself(tmp_path, name, function):
    """Flags included: sourcesink's worker asks for every control request (ALL_CTRL_RECIP)."""
    path = templates.path(name)
    proc = subprocess.run([sys.executable, "-m", "gadgetd", "blobs", str(path), function,
                           "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    fn = template.load(path).functions[function]
    flags = registry.server_class(registry.get(fn.type)).ffs_flags
    assert (tmp_path / f"out/{function}.descriptors").read_bytes() == \
        wire.descriptors_blob(fn, flags)
    assert (tmp_path / f"out/{function}.strings").read_bytes() == wire.strings_blob(fn)
    assert flags == (functionfs.ALL_CTRL_RECIP if name == "sourcesink" else 0)


@pytest.fixture
def program(tmp_path):
    """An exec function whose program says hello, makes ep1 (as f_fs would on ACTIVE), starts a
    helper and waits; tmp_path stands for the FunctionFS mount."""
    script = tmp_path / "prog"
    script.write_text('#!/bin/sh\necho "hello from $(pwd)"\nprintf "no newline" >&2\n'
                      'sleep 300 &\necho $! > "$MOUNT/helper"\ntouch "$MOUNT/ep1"\nexec sleep 300\n')
    script.chmod(stat.S_IRWXU)
    body = f'command = ["{script}"]\nuser = "root"\nallow_root = true\n'
    fn = parse(body).functions["mtp"]
    options = {**fn.options, "environment": {"MOUNT": str(tmp_path)},
               "working_directory": str(tmp_path)}
    return replace(fn, mountpoint=tmp_path, options=options)


def _run(loop, until, timeout=20):
    timer = loop.call_later(timeout, loop.stop)
    loop.run(until=until)
    timer.cancel()


@pytest.mark.skipif(os.geteuid() != 0, reason="drops to the function's user: needs root")
def test_the_program_is_ready_once_its_ep_files_exist(program, caplog):
    loop = EventLoop(max_wait=0.1)
    events = []
    proc = ExecProcess(program, loop, lambda w: events.append("ready"),
                       lambda w, reason, status: events.append(("gone", reason, status)))
    with caplog.at_level(logging.INFO, logger="gadgetd.exec_process"):
        proc.start(30)
        _run(loop, lambda: events)
        assert events == ["ready"] and proc.ready
        helper = int((program.mountpoint / "helper").read_text())
        proc.fail("stopped by the test")
        _run(loop, lambda: len(events) == 2)
    assert events[1] == ("gone", "stopped by the test", -9)
    assert f"mtp: hello from {program.mountpoint}" in caplog.messages
    assert "mtp: no newline" in caplog.messages
    assert _gone_or_zombie(helper)  # its helper went with it (the process group)
    loop.close()


def _gone_or_zombie(pid: int) -> bool:
    """Killed: no longer there, or a zombie its new parent has not reaped yet."""
    for _ in range(100):
        try:
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(os.geteuid() != 0, reason="drops to the function's user: needs root")
def test_a_program_without_ep_files_misses_its_deadline(program):
    program = replace(program, options={**program.options, "ready_timeout": 1,
                                        "command": ("/bin/sleep", "300")})
    loop = EventLoop(max_wait=0.1)
    events = []
    ExecProcess(program, loop, lambda w: events.append("ready"),
                lambda w, reason, status: events.append((reason, status))).start(30)
    _run(loop, lambda: events)
    assert events == [("its ep files did not appear within 1 s", -9)]
    loop.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="drops to the function's user: needs root")
def test_the_previous_instances_ep_files_are_waited_out(program, caplog):
    """ep files still there at start (the last program's ep0 open elsewhere): the program starts
    once they are gone, and is ready on its own files, not on those."""
    stale = program.mountpoint / "ep1"
    stale.touch()
    os.link(stale, program.mountpoint / "keep")  # its inode number stays taken
    removed = []
    loop = EventLoop(max_wait=0.1)
    events = []
    proc = ExecProcess(program, loop, lambda w: events.append(time.monotonic()),
                       lambda w, reason, status: events.append((reason, status)))
    loop.call_later(1.0, lambda: (stale.unlink(), removed.append(time.monotonic())))
    with caplog.at_level(logging.INFO, logger="gadgetd.exec_process"):
        proc.start(30)
        _run(loop, lambda: events)
        proc.fail("stopped by the test")
        _run(loop, lambda: len(events) == 2)
    assert removed and isinstance(events[0], float) and events[0] > removed[0]
    assert any("previous instance's ep files are still there" in m for m in caplog.messages)
    loop.close()
