"""The gadget lock and ownership record (gadgetd.ownership) and the runtime directory's rules."""

from __future__ import annotations

import json
import os

import pytest

from gadgetd import ownership, runstate
from gadgetd.errors import SetupError
from gadgetd.ownership import Claim, Held, Owner


@pytest.fixture(autouse=True)
def runtime(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "run"))
    return tmp_path / "run"


def test_a_second_claim_is_refused_naming_the_holder():
    first = Claim("g")
    with pytest.raises(Held) as refused:
        Claim("g")
    assert refused.value.owner == Owner.me()
    assert f"owned by gadgetd pid {os.getpid()}" in str(refused.value)
    assert ownership.holder("g") == Owner.me()
    first.release()
    assert ownership.holder("g") is None
    Claim("g").release()


def test_a_crashed_owners_record_is_found_by_the_next_claim():
    pid = os.fork()
    if pid == 0:  # claims, then dies without releasing: SIGKILL during bring-up
        Claim("g")
        os._exit(0)
    os.waitpid(pid, 0)
    claim = Claim("g")
    assert claim.previous is not None and claim.previous.pid == pid
    assert not claim.previous.alive  # gone; a reused pid would have another start time
    claim.release()
    assert Claim("g").previous is None  # a clean exit leaves no record


def test_a_reused_pid_is_not_the_owner():
    me = Owner.me()
    assert me.alive and not Owner(me.pid, me.start + 1).alive


def test_records_and_state_are_never_written_through_a_symlink(runtime, tmp_path):
    runtime.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (runtime / "g.lock").symlink_to(victim)
    (runtime / "g.json.tmp").symlink_to(victim)
    with pytest.raises(OSError):
        Claim("g")
    with pytest.raises(OSError):
        runstate.write("g", {"pid": 1})
    assert victim.read_text() == "precious"


def test_a_runtime_directory_others_can_write_is_refused(runtime):
    runtime.mkdir()
    runtime.chmod(0o777)
    with pytest.raises(SetupError, match="writable by nobody else"):
        Claim("g")


def test_state_round_trip(runtime):
    runstate.write("g", {"pid": 7})
    assert runstate.read("g") == {"pid": 7} and runstate.read_all() == [{"pid": 7}]
    assert json.loads((runtime / "g.json").read_text()) == {"pid": 7}
    runstate.remove("g")
    assert runstate.read("g") is None
