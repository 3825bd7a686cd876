"""Repro's verdict logic, report rendering and consistency checks (pure)."""

import json

import pytest

from gadgetd.repro import report as rep
from gadgetd.repro.report import ScenarioResult


def done(name, verdict=rep.ABSENT, attempts=10, **kw):
    return ScenarioResult(name, verdict=verdict, attempts=attempts, completed=True, **kw)


CONTENDED = {"host_served": 300, "daemon_setups": 200}  # contention enough for "absent"


def all_absent():
    results = {n: done(n) for n in rep.SCENARIOS}
    results["contended_open"] = done("contended_open", attempts=500, counts=dict(CONTENDED))
    return results


def stuck(frame="ffs_ep0_open+0x5c/0x1a0 [usb_f_fs]", states="DDD", interval=1.0) -> dict:
    """Evidence as rig.sample_hang gathers it."""
    samples = [{"pid": 42, "state": state, "t": 100.0 + i * interval,
                "stack": ["schedule+0x3d/0xa0", frame]} for i, state in enumerate(states)]
    return {**samples[-1], "samples": samples}


def test_absent_when_both_verdict_scenarios_ran_clean():
    verdict, reason = rep.overall_verdict(all_absent(), nonblock=True)
    assert verdict == rep.ABSENT and "O_NDELAY" in reason


def test_eagain_makes_it_present():
    results = all_absent()
    results["contended_open"].counts = {"eagain_no_retry": 3}
    verdict, reason = rep.overall_verdict(results, nonblock=True)
    assert verdict == rep.PRESENT and "EAGAIN 3 times" in reason


def test_hang_makes_it_present_even_if_contended_saw_nothing():
    results = all_absent()
    results["deactivated_reopen"].hang = stuck()
    verdict, reason = rep.overall_verdict(results, nonblock=False)
    assert verdict == rep.PRESENT and "3 samples in state D" in reason


@pytest.mark.parametrize("evidence", [
    stuck(states="DD"),  # too few samples
    stuck(interval=0.5),  # too close together
    stuck(states="DSD"),  # it moved
    stuck(frame="ext4_file_open+0x10/0x40"),  # stuck, but not in f_fs
    {"pid": 7, "state": "D", "stack": ["ffs_ep0_open"]},  # one bare sample (the old evidence)
])
def test_a_hang_needs_proof(evidence):
    assert not rep.hang_proven(evidence)
    results = all_absent()
    results["deactivated_reopen"].hang = evidence
    assert rep.overall_verdict(results, nonblock=False)[0] != rep.PRESENT
    report = rep.build_report("k", False, results)
    assert any("a hang without proof" in p for p in rep.problems(report, 0))


def test_mutex_frames_prove_a_hang_too():
    assert rep.hang_proven(stuck(frame="__mutex_lock.constprop.0+0x8b/0x4d0"))


def test_blocking_deadline_miss_is_present_against_a_fast_baseline():
    results = all_absent()
    results["contended_open"].counts = {"deadline_missed": 1, **CONTENDED}
    assert rep.overall_verdict(results, nonblock=False)[0] == rep.INCONCLUSIVE  # no baseline
    results["contended_open"].latency_ms = {"baseline": rep.percentiles([0.2] * 10)}
    verdict, reason = rep.overall_verdict(results, nonblock=False)
    assert verdict == rep.INCONCLUSIVE and "too slow to tell" in reason  # 20 x 200 ms > 2 s
    results["contended_open"].latency_ms = {"baseline": rep.percentiles([0.002] * 10)}
    verdict, reason = rep.overall_verdict(results, nonblock=False)
    assert verdict == rep.PRESENT and "uncontended p99 2.0 ms" in reason


@pytest.mark.parametrize("short,field", [({"attempts": 199}, "attempts"),
                                         ({"host_served": 99}, "host served"),
                                         ({"daemon_setups": 49}, "daemon setups")])
def test_absent_needs_evidence_of_contention(short, field):
    results = all_absent()
    contended = results["contended_open"]
    contended.attempts = short.get("attempts", contended.attempts)
    contended.counts.update({k: v for k, v in short.items() if k != "attempts"})
    verdict, reason = rep.overall_verdict(results, nonblock=True)
    assert verdict == rep.INCONCLUSIVE and "too little contention" in reason and field in reason


def test_a_remote_host_is_not_held_to_host_requests():
    """Where the host is another machine its requests are not counted here (no host_served)."""
    results = all_absent()
    del results["contended_open"].counts["host_served"]
    assert rep.overall_verdict(results, nonblock=True)[0] == rep.ABSENT


def test_side_scenarios_do_not_change_the_verdict():
    results = all_absent()
    results["open_race"].verdict = rep.PRESENT
    results["deactivated_set_alt"].verdict = rep.PRESENT
    assert rep.overall_verdict(results, nonblock=True)[0] == rep.ABSENT


@pytest.mark.parametrize("broken", ["missing", "incomplete", "no_attempts"])
def test_inconclusive_unless_both_ran_fully(broken):
    results = all_absent()
    if broken == "missing":
        del results["deactivated_reopen"]
    elif broken == "incomplete":
        results["deactivated_reopen"].completed = False
    else:
        results["contended_open"].attempts = 0
    assert rep.overall_verdict(results, nonblock=True)[0] == rep.INCONCLUSIVE


def test_scenario_after_a_stuck_task_is_inconclusive_not_absent():
    results = all_absent()
    results["contended_open"].hang = {"pid": 1, "state": "D"}
    results["contended_open"].completed = False
    results["deactivated_reopen"] = ScenarioResult("deactivated_reopen", notes=["not run"])
    assert rep.overall_verdict(results, nonblock=True)[0] == rep.INCONCLUSIVE


def test_error_forces_inconclusive():
    report = rep.build_report("6.1.0-54-amd64", True, all_absent(), error="no UDC")
    assert report["verdict"] == rep.INCONCLUSIVE and report["reason"] == "no UDC"


def test_report_json_and_exit_status_consistency():
    report = rep.build_report("6.1.0-54-amd64", True, all_absent())
    parsed = json.loads(rep.dumps(report))
    assert parsed["kernel"] == "6.1.0-54-amd64" and parsed["verdict"] == "absent"
    assert set(parsed["scenarios"]) == set(rep.SCENARIOS)
    assert rep.problems(parsed, 0) == []
    assert rep.problems(parsed, 1) == ["exit status 1 does not match verdict absent"]


def test_problems_flags_missing_and_idle_scenarios():
    results = all_absent()
    results["open_race"].attempts = 0
    del results["deactivated_set_alt"]
    report = rep.build_report("k", True, results)
    found = rep.problems(report, rep.EXIT_STATUS[report["verdict"]])
    assert "scenario deactivated_set_alt missing" in found
    assert "scenario open_race made no attempts" in found


def test_problems_rejects_inconclusive():
    report = rep.build_report("k", True, {}, error="setup failed")
    assert any("inconclusive" in p for p in rep.problems(report, 125))


def test_percentiles_nearest_rank():
    samples = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    assert rep.percentiles(samples) == {"n": 100, "p50": 50.0, "p99": 99.0, "max": 100.0}
    assert rep.percentiles([]) == {"n": 0}
    assert rep.percentiles([0.002]) == {"n": 1, "p50": 2.0, "p99": 2.0, "max": 2.0}


def test_render_table_shows_hang_stack_and_verdict():
    results = all_absent()
    results["deactivated_reopen"].hang = stuck(frame="functionfs_unbind+0x2b/0x70 [usb_f_fs]")
    results["contended_open"].latency_ms = {"nonblock-once": rep.percentiles([0.001, 0.002])}
    text = rep.render_table(rep.build_report("6.1.0-56-amd64", True, results))
    assert "HANG: task 42 state D" in text
    assert "stack: functionfs_unbind+0x2b/0x70 [usb_f_fs]" in text
    assert "nonblock-once p50/p99/max 1.0/2.0/2.0 ms" in text
    assert text.splitlines()[-1].startswith("verdict: present")


def test_an_unexpected_exception_is_inconclusive_never_bad(monkeypatch):
    """A daemon stuck in the kernel makes subprocess raise TimeoutExpired: 125, with a report."""
    import io
    import json
    import subprocess

    from gadgetd.repro import runner
    from gadgetd.repro.rig import RemoteHost

    class StuckRig:
        def __init__(self, *args):
            self.daemon_failures = []
            self.host = RemoteHost()

        def choose_host(self, mode, report):
            pass

        def cleanup(self):
            pass

    def stuck(rig, nonblock, duration):
        raise subprocess.TimeoutExpired(["gadgetd", "run"], 60)

    monkeypatch.setattr(runner, "environment_problem", lambda: None)
    monkeypatch.setattr(runner, "Rig", StuckRig)
    monkeypatch.setattr(runner, "ALL", {name: stuck for name in runner.ALL})
    out = io.StringIO()
    assert runner.run(True, list(runner.ALL), 1.0, True, None, out=out) == 125
    report = json.loads(out.getvalue())
    assert report["verdict"] == "inconclusive"
    notes = [n for s in report["scenarios"].values() for n in s.get("notes", [])]
    assert any("TimeoutExpired" in n for n in notes), report

    def broken_host(self, mode, report):
        raise KeyError("host")

    monkeypatch.setattr(StuckRig, "choose_host", broken_host)
    out = io.StringIO()
    assert runner.run(True, list(runner.ALL), 1.0, True, None, out=out) == 125
    assert "KeyError" in json.loads(out.getvalue())["reason"]


def test_problems_flag_a_wrong_verdict_and_gadgetds_own_failures():
    """What make repro-test pins: the expected verdict, no policy deadline miss, gadgetd never
    exiting non-zero, whatever the verdict says."""
    results = all_absent()
    report = rep.build_report("6.1.0-57-amd64", True, results, None)
    assert rep.problems(report, 0, expect=rep.ABSENT) == []
    assert rep.problems(report, 0, expect=rep.PRESENT) == ["verdict is absent, expected present"]
    results["contended_open"].counts["nonblock_policy_deadline_failures"] = 2
    results["deactivated_set_alt"].gadgetd_failures.append("gadgetd run exited 1: boom")
    report = rep.build_report("6.1.0-57-amd64", True, results, None)
    assert rep.problems(report, 0) == [
        "scenario contended_open: gadgetd's retry policy missed its deadline 2 times",
        "scenario deactivated_set_alt: gadgetd run exited 1: boom"]
    assert "GADGETD FAILED: gadgetd run exited 1: boom" in rep.render_table(report)


def test_a_setup_hiccup_is_tried_again_and_nothing_of_it_is_lost(monkeypatch):
    """An attempt that fails (a slow enumeration) is retried inside the scenario; its note and
    gadgetd's failure in it stay in the result."""
    from gadgetd.errors import SetupError
    from gadgetd.repro import runner

    class Rig:
        daemon_failures: list = []
        cleanups = 0

        def cleanup(self):
            self.cleanups += 1

    calls = []

    def flaky(rig, nonblock, duration):
        calls.append(1)
        if len(calls) == 1:
            rig.daemon_failures.append("gadgetd run exited 3: no device")
            raise SetupError("device did not enumerate in 30 s")
        return done("contended_open", attempts=500, counts=dict(CONTENDED))

    monkeypatch.setattr(runner, "ALL", {"contended_open": flaky})
    rig = Rig()
    result = runner._run_scenario(rig, "contended_open", True, 1.0)
    assert len(calls) == 2 and result.verdict == rep.ABSENT and rig.cleanups >= 1
    assert result.notes == ["attempt 1 inconclusive, tried again: repro failed: device did not "
                            "enumerate in 30 s"]
    assert result.gadgetd_failures == ["gadgetd run exited 3: no device"]
    calls.clear()
    monkeypatch.setattr(runner, "ALL", {"contended_open": lambda *a: rep.ScenarioResult(
        "contended_open", notes=["too quiet"])})
    result = runner._run_scenario(rig, "contended_open", True, 1.0)
    assert result.verdict == rep.INCONCLUSIVE and len(result.notes) == runner.SCENARIO_ATTEMPTS


@pytest.mark.parametrize("name", ["delayed_open", "read_after_unbind"])
def test_each_ep0_read_scenario_makes_it_present(name):
    results = all_absent()
    results[name].verdict = rep.PRESENT
    results[name].finding = "opens waited"
    verdict, reason = rep.overall_verdict(results, nonblock=True)
    assert verdict == rep.PRESENT and reason == f"{name}: opens waited"


def test_an_unproven_hang_does_not_make_a_scenario_present():
    results = all_absent()
    results["read_after_unbind"].verdict = rep.PRESENT
    results["read_after_unbind"].hang = stuck(states="DD")
    assert rep.overall_verdict(results, nonblock=True)[0] != rep.PRESENT


def test_absent_needs_every_verdict_scenario_absent():
    results = all_absent()
    results["read_after_unbind"].verdict = rep.INCONCLUSIVE  # ran, but too few re-reads
    verdict, reason = rep.overall_verdict(results, nonblock=True)
    assert verdict == rep.INCONCLUSIVE and "read_after_unbind" in reason


@pytest.mark.parametrize("verdict", [rep.ABSENT, rep.PRESENT, rep.INCONCLUSIVE])
def test_one_asked_scenario_gives_its_own_verdict(verdict):
    """`repro --scenario X`: X's verdict is the exit status, whatever the others would say."""
    for name in rep.SCENARIOS:
        results = {name: done(name, verdict=verdict)}
        if name == "contended_open":  # its verdict is read from its counts
            results[name].counts = ({"eagain_no_retry": 1} if verdict == rep.PRESENT
                                    else dict(CONTENDED))
            results[name].attempts = 500 if verdict == rep.ABSENT else 0
        report = rep.build_report("k", True, results, asked=[name])
        assert report["verdict"] == verdict, (name, report["reason"])
        assert report["asked"] == [name]


def test_boots_put_each_hang_capable_scenario_alone_and_last():
    assert rep.boots(rep.SCENARIOS) == [
        ["contended_open", "deactivated_set_alt", "open_race", "delayed_open"],
        ["deactivated_reopen"], ["read_after_unbind"]]
    assert rep.boots(["read_after_unbind"]) == [["read_after_unbind"]]
    assert rep.boots(["open_race"]) == [["open_race"]]


def test_reports_of_several_boots_merge_into_one_verdict():
    results = all_absent()
    parts = [rep.build_report("6.1.0-57-amd64", True, {n: results[n] for n in group},
                              host="local", asked=group) for group in rep.boots(rep.SCENARIOS)]
    merged = rep.merge(json.loads(json.dumps(parts)))
    assert merged["verdict"] == rep.ABSENT and merged["boots"] == 3
    assert set(merged["scenarios"]) == set(rep.SCENARIOS) and merged["asked"] == list(rep.SCENARIOS)
    assert rep.problems(merged, 0) == []
    reopen = parts[1]["scenarios"]["deactivated_reopen"]
    reopen["hang"] = stuck()
    assert rep.merge(parts)["verdict"] == rep.PRESENT  # a hang in its own boot counts
    parts[2] = rep.build_report("6.1.0-57-amd64", True, {}, error="repro could not run: no UDC",
                                asked=["read_after_unbind"])
    merged = rep.merge(parts)
    assert merged["verdict"] == rep.PRESENT  # the hang still proves it
    reopen["hang"] = None
    merged = rep.merge(parts)
    assert merged["verdict"] == rep.INCONCLUSIVE and "no UDC" in merged["reason"]


def test_problems_flag_a_scenario_verdict_other_than_expected():
    results = all_absent()
    report = rep.build_report("6.1.0-57-amd64", True, results)
    assert rep.problems(report, 0, expect_scenarios={"read_after_unbind": rep.ABSENT}) == []
    assert rep.problems(report, 0, expect_scenarios={"delayed_open": rep.PRESENT}) == [
        "scenario delayed_open is absent, expected present"]
