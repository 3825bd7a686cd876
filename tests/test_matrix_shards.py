"""Matrices in slices (--shard K/N, matrix merge) and their JUnit XML, without a VM; the example
CI workflow's commands parsed by the CLI itself."""

import json
import re
import shlex
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import click
import pytest

from gadgetd.errors import GadgetdError
from gadgetd.host import cli, matrix
from gadgetd.repro import report as rep

ROOT = Path(__file__).resolve().parents[1]
SPECS = ["debian:sid", "debian:6.1.0-9-amd64", "debian:6.1.0-57-amd64", "debian:trixie",
         "debian:6.1.0-50-amd64", "tree:/usr/src/linux-source-6.1.tar.xz"]


def _row(spec: str, verdict: str) -> matrix.Row:
    scenarios = {"contended_open": {"verdict": verdict, "finding": "EAGAIN 17%"},
                 "deactivated_reopen": {"verdict": rep.ABSENT}}
    return matrix.Row(spec, release=spec.split(":")[1], verdict=verdict, exit_status=0,
                      scenarios=scenarios, report={"verdict": verdict}, seconds=12.5)


def test_the_order_compares_numbers_as_numbers():
    assert matrix.ordered(SPECS + ["debian:sid"]) == [
        "debian:6.1.0-9-amd64", "debian:6.1.0-50-amd64", "debian:6.1.0-57-amd64", "debian:sid",
        "debian:trixie", "tree:/usr/src/linux-source-6.1.tar.xz"]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7])
def test_shards_cover_every_kernel_once(n):
    slices = [matrix.shard(SPECS, k, n) for k in range(1, n + 1)]
    assert sorted(s for part in slices for s in part) == sorted(SPECS)
    assert sum(len(part) for part in slices) == len(SPECS)
    assert matrix.shard(SPECS, 2, 3) == ["debian:6.1.0-50-amd64", "debian:trixie"]


def test_merged_shards_equal_one_run_timings_aside(tmp_path):
    verdicts = dict(zip(SPECS, [rep.ABSENT, rep.ABSENT, rep.PRESENT, rep.ABSENT,
                                rep.PRESENT, rep.INCONCLUSIVE], strict=True))
    whole = [_row(spec, verdicts[spec]) for spec in matrix.ordered(SPECS)]
    matrix.save(whole, tmp_path / "single")
    dirs = []
    for k in (1, 2, 3):
        part = [_row(spec, verdicts[spec]) for spec in matrix.shard(SPECS, k, 3)]
        for row in part:
            row.seconds = 99.0 + k  # each shard's own timings
        matrix.save(part, tmp_path / f"shard-{k}")
        dirs.append(tmp_path / f"shard-{k}")
    merged = matrix.merge(list(reversed(dirs)))
    matrix.save(merged, tmp_path / "merged")

    def untimed(path):
        return [{k: v for k, v in row.items() if k != "seconds"}
                for row in json.loads(path.read_text())]
    assert untimed(tmp_path / "merged/matrix.json") == untimed(tmp_path / "single/matrix.json")
    assert matrix.render(merged) == matrix.render(whole)


def test_a_kernel_in_two_shards_is_refused(tmp_path):
    for name in ("a", "b"):
        matrix.save([_row("debian:sid", rep.ABSENT)], tmp_path / name)
    with pytest.raises(GadgetdError, match="debian:sid: in .*b/matrix.json"):
        matrix.merge([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(GadgetdError, match="no matrix.json"):
        matrix.merge([tmp_path])


def test_junit_present_fails_inconclusive_errs_absent_passes(tmp_path):
    rows = [_row("debian:6.1.0-57-amd64", rep.PRESENT), _row("debian:sid", rep.ABSENT),
            _row("debian:6.1.0-50-amd64", rep.INCONCLUSIVE)]
    rows.append(matrix.Row("debian:nope", note="kernel did not boot"))  # no scenario ran
    suite = ET.parse(matrix.junit(rows, tmp_path / "m.xml")).getroot()
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"),
            suite.get("skipped")) == ("7", "1", "2", "0")
    cases = {(c.get("classname"), c.get("name")): [e.tag for e in c] for c in suite}
    assert cases[("6.1.0-57-amd64", "contended_open")] == ["failure"]
    assert cases[("6.1.0-57-amd64", "deactivated_reopen")] == []
    assert cases[("6.1.0-50-amd64", "contended_open")] == ["error"]
    assert cases[("debian:nope", "repro")] == ["error"]
    assert not list(suite.iter("skipped"))
    failure = suite.find("testcase/failure")
    assert failure.get("message") == "contended_open present: EAGAIN 17%"


def _parse(argv: list[str]) -> click.Context:
    """The leaf command's context, as gadgetd-hil would parse argv (nothing runs)."""
    ctx = cli.main.make_context("gadgetd-hil", argv)
    while isinstance(ctx.command, click.Group):
        rest = ctx._protected_args + ctx.args
        if not rest:
            return ctx
        name, command, args = ctx.command.resolve_command(ctx, rest)
        ctx = command.make_context(name, args, parent=ctx)
    return ctx


def test_the_example_ci_workflow_s_commands_parse(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the merge job has downloaded the shards
    for k in range(1, 5):
        (tmp_path / f"out/shard-{k}").mkdir(parents=True)
    text = (ROOT / "docs" / "ci-matrix.yml").read_text()
    lines = [line.split("run:", 1)[1] for line in text.splitlines()
             if "run:" in line and "gadgetd-hil" in line]
    assert len(lines) == 2
    parsed = []
    for line in lines:
        argv = shlex.split(re.sub(r"\$\{\{ matrix.shard \}\}", "3", line))
        parsed.append(_parse(argv[argv.index(".venv/bin/gadgetd-hil") + 1:]))
    shard, merge = parsed
    assert (shard.command.name, shard.params["shard"], shard.params["out_dir"]) == (
        "matrix", (3, 4), "out/shard-3")
    assert merge.command.name == "merge"
    assert [str(d) for d in merge.params["dirs"]] == [f"out/shard-{k}" for k in range(1, 5)]
    assert merge.params["out_dir"] == "out/matrix"


@pytest.mark.parametrize("value", ["0/4", "5/4", "a/b", "3"])
def test_bad_shards_are_refused(value):
    with pytest.raises(click.BadParameter):
        cli._shard(value)


def test_jobs_the_memory_cannot_hold_are_refused_before_any_vm(monkeypatch):
    from click.testing import CliRunner

    monkeypatch.setattr(matrix, "_available_mib", lambda: 4000)
    monkeypatch.setattr(matrix, "run_many", lambda *a, **k: pytest.fail("a VM was started"))
    result = CliRunner().invoke(cli.main, ["matrix", "--kernels", "debian:sid", "--jobs", "3"])
    assert result.exit_code != 0
    assert result.output.strip() == ("gadgetd-hil: error: --jobs 3: 3 VMs need about 4.5 GiB of "
                                     "memory (1.5 each), 3.9 GiB is available")


def test_jobs_sharing_cores_are_named(monkeypatch, capsys):
    monkeypatch.setattr(matrix, "_available_mib", lambda: 8 * 1024)
    monkeypatch.setattr(matrix.os, "cpu_count", lambda: 4)
    matrix.check_room(2, log=sys.stderr)  # capsys's
    assert capsys.readouterr().err == ""
    matrix.check_room(3, log=sys.stderr)
    assert capsys.readouterr().err == ("gadgetd-hil matrix: --jobs 3 on 4 cores: 6 vCPUs share "
                                       "them, so each VM runs slower\n")


def test_one_job_reads_no_memory_figure(monkeypatch):
    monkeypatch.setattr(matrix, "_available_mib", lambda: pytest.fail("read /proc/meminfo"))
    matrix.check_room(1)


def test_available_memory_is_read_from_proc_meminfo():
    total = int(Path("/proc/meminfo").read_text().split()[1]) // 1024  # MemTotal, the first line
    assert 0 < matrix._available_mib() <= total
