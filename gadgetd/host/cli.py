"""`gadgetd-hil`: host-side tools (VM bench, kernels, the HIL suite next to a local gadget)."""

from __future__ import annotations

import shutil
import signal
import sys
import time
from pathlib import Path

import click

from gadgetd import __version__
from gadgetd.errors import GadgetdError
from gadgetd.host import kernels, usbip
from gadgetd.repro import SCENARIOS


def _fail(exc: GadgetdError):
    click.echo(f"gadgetd-hil: error: {exc}", err=True)
    sys.exit(exc.status)


def _selector(device: str, serial: str | None):
    from gadgetd.host.device import DeviceSelector

    try:
        return DeviceSelector.parse(device, serial)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--device'") from None


@click.group()
@click.version_option(__version__, prog_name="gadgetd-hil")
def main():
    """Host side of gadgetd: boot kernels with dummy_hcd, run the HIL suite, compare kernels."""
    # SIGTERM ends it as Ctrl-C does, through every `finally`: the VMs it booted (each in a
    # session of its own) are killed too, not left running.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--kernel", "spec", default=kernels.DEFAULT_SPEC, show_default=True,
              help="debian:ABI, debian:SUITE, a kernel image path (with --modules) or a build tree.")
@click.option("--modules", "modules_dir", type=click.Path(exists=True, file_okay=False),
              help="lib/modules/RELEASE for a kernel image path.")
@click.option("--speed", type=click.Choice(["full", "high", "super"]), default="high",
              show_default=True, help="dummy_hcd link speed.")
@click.option("--timeout", type=float, default=1800, show_default=True,
              help="Seconds CMD may run after boot (then exit 124).")
@click.option("--results", type=click.Path(file_okay=False),
              help="Host directory COMMAND may write into (its path is in $GADGETD_RESULTS).")
@click.option("--systemd", is_flag=True,
              help="Boot the machine's systemd as init; COMMAND runs as a service under it.")
@click.option("--usb", type=click.Choice(["dummy", "usbip-loopback"]), default="dummy",
              show_default=True, help="dummy_hcd, or usbip-vudc exported over loopback TCP to "
              "vhci-hcd in the same kernel (the USB/IP path without a second VM).")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def vm(spec, modules_dir, speed, timeout, results, systemd, usb, command):
    """Boot a kernel in QEMU with a USB stack (dummy_hcd) and run COMMAND in it as root.

    Exit status: COMMAND's; 124 if it did not finish in time; 125 if the kernel did not boot.
    """
    from gadgetd.host import vm as vm_mod

    try:
        kernel = kernels.resolve(spec, modules_dir)
        result = vm_mod.run(kernel, list(command), speed=speed, timeout=timeout,
                            results=Path(results) if results else None, systemd=systemd,
                            usb=usb)
    except GadgetdError as exc:
        _fail(exc)
    shutil.rmtree(result.result_dir, ignore_errors=True)
    sys.exit(result.status)


@main.command("build")
@click.argument("tree", type=click.Path(exists=True, path_type=Path))
@click.option("--patch", "patches", multiple=True, type=click.Path(path_type=Path),
              help="Apply this patch (-p1) to a copy of the tree first (repeatable, in order).")
def build_cmd(tree, patches):
    """Build TREE (a kernel source directory, git work tree or tarball such as
    /usr/src/linux-source-6.1.tar.xz) for the VM and print the image's path, which 'vm
    --kernel' and 'matrix --kernels' take as it is (so does tree:TREE[:PATCH...]).

    TREE is never written to; each tree + patch set is built once (ccache, incremental from the
    tree's last build). Exit status 125 when the build fails."""
    from gadgetd.host import build

    try:
        built = build.build(tree, list(patches), kernels.CACHE)
    except GadgetdError as exc:
        _fail(exc)
    if built.seconds:
        click.echo(f"gadgetd-hil build: {built.release} built in {built.seconds:.0f} s"
                   + (f" (from {built.seeded_from}'s objects)" if built.seeded_from else ""),
                   err=True)
    click.echo(built.image)


@main.command()
@click.option("--board-kernel", default=kernels.DEFAULT_SPEC, show_default=True,
              help="SPEC of the board VM's kernel (usbip-vudc).")
@click.option("--host-kernel", default=kernels.DEFAULT_SPEC, show_default=True,
              help="SPEC of the host VM's kernel (vhci-hcd).")
@click.option("--board", "board_command", required=True,
              help="Shell command for the board VM, e.g. 'gadgetd run loopback'.")
@click.option("--host", "host_command", required=True,
              help="Shell command for the host VM, e.g. 'gadgetd-hil remote loopback -q'.")
@click.option("--out", "out_dir", default="out/lab", show_default=True,
              type=click.Path(file_okay=False), help="Logs and results: OUT/board, OUT/host.")
@click.option("--timeout", type=float, default=1800, show_default=True,
              help="Seconds each command may run after boot (then exit 124).")
def lab(board_kernel, host_kernel, board_command, host_command, out_dir, timeout):
    """Boot a board VM (usbip-vudc) and a host VM (vhci-hcd) joined by a private link; run a
    command in each. The host VM keeps the board's gadget attached over USB/IP.

    Exit status: the host command's; 1 if the board command failed; 124 on a timeout; 125 if a
    VM did not boot.
    """
    from gadgetd.host import lab as lab_mod

    try:
        board_k, host_k = kernels.resolve(board_kernel), kernels.resolve(host_kernel)
        result = lab_mod.run(board_k, host_k, ["sh", "-c", board_command],
                             ["sh", "-c", host_command], Path(out_dir), timeout=timeout)
    except GadgetdError as exc:
        _fail(exc)
    for side in ("board", "host"):
        shutil.rmtree(getattr(result, side).result_dir, ignore_errors=True)
    click.echo(f"gadgetd-hil lab: exit {result.status}" + (f": {result.note}" if result.note
                                                           else ""), err=True)
    sys.exit(result.status)


@main.command()
@click.argument("remote")
@click.option("--busid", default=usbip.BUSID, show_default=True,
              help="The board's exported device (its vudc).")
@click.option("--duration", type=float, default=0, help="Seconds to run (default: until Ctrl-C).")
def attach(remote, busid, duration):
    """Keep the gadget a board exports over USB/IP (usbipd --device) attached to this machine's
    vhci-hcd: attach again whenever the board unbinds and binds."""
    try:
        usbip.Attacher(remote, busid, log=sys.stdout).run(duration)
    except KeyboardInterrupt:
        pass


@main.command("kernels")
@click.option("--refresh", is_flag=True, help="Refresh the private package lists first.")
def kernels_cmd(refresh):
    """List cached kernels and the Debian kernels available to fetch."""
    try:
        if refresh:
            kernels.apt().update(force=True)
        cached = {k.release: k for k in kernels.cached()}
        click.echo(f"{'suite':<9} {'kernel (debian:ABI)':<26} {'package version':<22} cached")
        for suite, release, version in kernels.available():
            mark = "yes" if release in cached and cached[release].package_version == version else ""
            click.echo(f"{suite:<9} {release:<26} {version:<22} {mark}")
    except GadgetdError as exc:
        _fail(exc)


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("template_path", metavar="TEMPLATE")
@click.option("--daemon-arg", "daemon_args", multiple=True,
              help="Extra argument for 'gadgetd run' (repeatable), e.g. --daemon-arg=--nonblock.")
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
def local(template_path, daemon_args, pytest_args):
    """Serve TEMPLATE here (dummy_hcd) and run the HIL suite against it; PYTEST_ARGS pass through.

    Fails when the suite fails, gadgetd exits non-zero, or teardown leaves anything behind.
    """
    from gadgetd.host.local import serve_and_test

    try:
        sys.exit(serve_and_test(template_path, list(pytest_args), list(daemon_args)))
    except GadgetdError as exc:
        _fail(exc)


@main.command()
@click.argument("template_path", metavar="TEMPLATE", default="loopback")
@click.option("--daemon-arg", "daemon_args", multiple=True,
              help="Extra argument for 'gadgetd run' (repeatable).")
def demo(template_path, daemon_args):
    """Serve TEMPLATE here, show the host's view of it and loop some data through it."""
    from gadgetd.host.local import demo as run_demo

    sys.exit(run_demo(template_path, list(daemon_args)))


def _scenario_verdicts(values: tuple[str, ...]) -> dict[str, str]:
    verdicts = {}
    for value in values:
        name, _, verdict = value.partition("=")
        if name not in SCENARIOS or verdict not in ("present", "absent", "inconclusive"):
            raise click.BadParameter(f"{value!r}: NAME=VERDICT, NAME one of {', '.join(SCENARIOS)}"
                                     ", VERDICT present, absent or inconclusive",
                                     param_hint="'--expect-scenario'")
        verdicts[name] = verdict
    return verdicts


SCENARIO_OPTION = click.option(
    "--scenario", "scenarios", multiple=True, type=click.Choice(SCENARIOS),
    help="Only these repro scenarios (repeatable; default: all, the hang-capable ones in boots "
         "of their own). The verdict is theirs.")


def _shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    k, _, n = value.partition("/")
    if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise click.BadParameter(f"{value!r}: K/N with 1 <= K <= N", param_hint="'--shard'")
    return int(k), int(n)


@main.group(invoke_without_command=True)
@click.option("--kernels", "specs", help="Comma-separated SPECs (default: bookworm 6.1 ABIs from "
              "6.1.0-50 up, trixie's and sid's newest).")
@click.option("--quick", is_flag=True, help="bookworm's current kernel, 6.1.0-50 and sid's newest.")
@click.option("--blocking", is_flag=True, help="Run repro with blocking opens (default O_NDELAY).")
@click.option("--out", "out_dir", default="out", show_default=True, type=click.Path(file_okay=False),
              help="Where matrix.json, matrix.png and matrix.xml (JUnit) go.")
@click.option("--jobs", type=click.IntRange(1, 16), default=1, show_default=True,
              help="VMs at once (each guest's output then goes to OUT/logs/).")
@click.option("--shard", callback=lambda c, p, v: _shard(v), metavar="K/N",
              help="Run slice K of N: the kernels whose index in the sorted list is K-1 mod N "
                   "('matrix merge' joins the slices' --out directories).")
@click.option("--check", is_flag=True, help="Fail unless every report is complete, consistent "
              "and conclusive, and gadgetd itself did not fail (what make test asks).")
@click.option("--expect", type=click.Choice(["present", "absent"]),
              help="With --check: fail unless every kernel's verdict is this one.")
@click.option("--usb", type=click.Choice(["dummy", "usbip-loopback"]), default="dummy",
              show_default=True, help="dummy_hcd, or USB/IP in one kernel: repro --host remote "
              "with 'gadgetd-hil drive' as the host, its counts merged.")
@SCENARIO_OPTION
@click.option("--expect-scenario", "expect_scenarios", multiple=True, metavar="NAME=VERDICT",
              callback=lambda c, p, v: _scenario_verdicts(v),
              help="With --check: fail unless scenario NAME's verdict is VERDICT (repeatable).")
@click.pass_context
def matrix(ctx, specs, quick, blocking, out_dir, jobs, shard, check, expect, usb, scenarios,
           expect_scenarios):
    """Boot each kernel, run 'gadgetd repro' there, print one table, write JSON, a chart and
    JUnit XML (present: failure, inconclusive: error, absent: pass)."""
    if ctx.invoked_subcommand is not None:
        return
    from gadgetd.host import matrix as m
    from gadgetd.repro.report import problems

    try:
        chosen = specs.split(",") if specs else m.quick_specs() if quick else m.default_specs()
        m.check_room(jobs)
    except GadgetdError as exc:
        _fail(exc)
    chosen = m.shard(chosen, *shard) if shard else m.ordered(chosen)
    started = time.monotonic()
    rows = m.run_many(chosen, jobs, Path(out_dir) / "logs", nonblock=not blocking, usb=usb,
                      scenarios=scenarios or SCENARIOS)
    failed = []
    for row in rows:
        if row.report is None:
            failed.append(f"{row.spec}: no report ({row.note or 'exit ' + str(row.exit_status)})")
        elif check:
            failed += [f"{row.spec}: {p}" for p in problems(row.report, row.exit_status, expect,
                                                              expect_scenarios)]
    json_path, png_path = m.save(rows, Path(out_dir))
    click.echo(m.render(rows))
    click.echo(f"\nwrote {json_path}, {png_path} and matrix.xml; {len(rows)} kernels in "
               f"{time.monotonic() - started:.0f} s")
    for problem in failed:
        click.echo(f"gadgetd-hil matrix: {problem}", err=True)
    sys.exit(1 if failed else 0)


@matrix.command("merge")
@click.argument("dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False,
                                                                 path_type=Path))
@click.option("--out", "out_dir", default="out", show_default=True, type=click.Path(file_okay=False),
              help="Where the joined matrix.json, matrix.png and matrix.xml go.")
def matrix_merge(dirs, out_dir):
    """Join the --out directories of 'matrix --shard K/N' runs into one table, JSON, chart and
    JUnit XML, as one run would have written them."""
    from gadgetd.host import matrix as m

    try:
        rows = m.merge(list(dirs))
    except GadgetdError as exc:
        _fail(exc)
    json_path, png_path = m.save(rows, Path(out_dir))
    click.echo(m.render(rows))
    click.echo(f"\nwrote {json_path}, {png_path} and matrix.xml; {len(rows)} kernels")


@main.command()
@click.option("--good", required=True, help="SPEC of a kernel without the regression (with "
              "--tree: a revision).")
@click.option("--bad", required=True, help="SPEC of a kernel with it (with --tree: a revision).")
@click.option("--tree", "repo", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A kernel git repository: git bisect run between the revisions GOOD and BAD, "
                   "each step built (gadgetd-hil build), booted and run through repro.")
@click.option("--blocking", is_flag=True, help="Run repro with blocking opens (default O_NDELAY).")
@SCENARIO_OPTION
def bisect(good, bad, repo, blocking, scenarios):
    """Binary-search the Debian ABIs (or with --tree the commits) between GOOD and BAD for the
    first with the regression (or with the bug of --scenario).

    Exit status 0 once the first bad one is named; 125 when untestable steps leave it open."""
    from gadgetd.host import matrix as m
    from gadgetd.host import treebisect

    scenarios = scenarios or SCENARIOS
    try:
        if repo is not None:
            sys.exit(treebisect.bisect(repo, good, bad, scenarios, nonblock=not blocking))
        sys.exit(m.bisect(good, bad, nonblock=not blocking, scenarios=scenarios))
    except GadgetdError as exc:
        _fail(exc)


@main.command()
@click.option("--device", required=True, help="VID:PID of the gadget.")
@click.option("--serial", help="Serial number, when several match.")
@click.option("--duration", type=float, default=0, help="Seconds to run (default: until Ctrl-C).")
@click.option("--until", "until", type=click.Path(dir_okay=False),
              help="Stop once this file exists (in the lab: $GADGETD_LAB/board/exit-status).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False),
              help="Append the cumulative counts to FILE each second (JSON lines), for "
                   "'gadgetd repro --host-report FILE' on the board; send nothing while "
                   "FILE.quiet exists.")
def drive(device, serial, duration, until, report_path):
    """Keep a gadget's ep0 busy from this host (for 'gadgetd repro' running on a board)."""
    from gadgetd.host.drive import Storm, report_line

    storm = Storm(_selector(device, serial),
                  quiet_file=f"{report_path}.quiet" if report_path else None).start()
    end = time.monotonic() + duration if duration else None
    report = open(report_path, "a", buffering=1) if report_path else None
    seq = 0
    try:
        while (end is None or time.monotonic() < end) and not (until and Path(until).exists()):
            time.sleep(1)
            seq += 1
            counts = dict.copy(storm.counts)  # one C call: the storm thread may be counting
            if report:
                report.write(report_line(seq, counts, storm.silent) + "\n")
            if seq % 5 == 0:
                click.echo(f"{time.strftime('%H:%M:%S')} " + ", ".join(
                    f"{k}={v}" for k, v in sorted(counts.items())))
    except KeyboardInterrupt:
        pass
    final = storm.stop()
    if report:
        report.write(report_line(seq + 1, final) + "\n")
        report.close()
    click.echo("final: " + ", ".join(f"{k}={v}" for k, v in sorted(final.items())))


@main.command("place-repro", context_settings={"ignore_unknown_options": True})
@click.option("--lg-env", "env_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="labgrid environment: target 'main' with a RemotePlace, an SSHDriver and a "
                   "GadgetdStrategy (gadgetd.host.labgrid_place); the place acquired.")
@click.option("--template", default="loopback", show_default=True,
              help="The gadget repro builds on the board (a packaged name or a path there).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Copy the board's record and log and the host's counts here.")
@click.argument("repro_args", nargs=-1, type=click.UNPROCESSED)
def place_repro(env_file, template, out_dir, repro_args):
    """'gadgetd repro' on a labgrid place's board (REPRO_ARGS pass through, e.g. --nonblock
    --scenario contended_open), the host's traffic from this machine, where the place's USB
    device is. Needs gadgetd[labgrid] and sshfs here. Exit status: repro's."""
    from gadgetd.host.labgrid_place import repro

    try:
        sys.exit(repro(env_file, template, list(repro_args), out_dir))
    except GadgetdError as exc:
        _fail(exc)


@main.command("udev-rule")
@click.option("--device", required=True, help="VID:PID of the gadget.")
@click.option("--serial", help="Only the device with this serial number.")
@click.option("--group", default="plugdev", show_default=True)
def udev_rule(device, serial, group):
    """Print a udev rule giving non-root users access to the gadget (save it in
    /etc/udev/rules.d/70-gadgetd.rules, then 'udevadm control --reload; udevadm trigger')."""
    from gadgetd.host.device import udev_rule as rule

    selector = _selector(device, serial)
    try:
        click.echo(rule(selector, group), nl=False)
    except GadgetdError as exc:
        _fail(exc)
if __name__ == "__main__":
    main()
