"""`gadgetd`: the board-side command line."""

from __future__ import annotations

import logging
import os
import sys

import click

from gadgetd import __version__, host_quirks, registry, template, templates
from gadgetd.errors import GadgetdError
from gadgetd.model import BLOCKING, NONBLOCK
from gadgetd.repro import SCENARIOS


def setup_logging(verbose: bool) -> None:
    # Under systemd the journal stamps every line; elsewhere a terminal reader wants the time.
    fmt = "%(levelname)s %(name)s: %(message)s"
    if "JOURNAL_STREAM" not in os.environ:
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=fmt,
                        stream=sys.stderr)


def fail(exc: GadgetdError):
    click.echo(f"gadgetd: error: {exc}", err=True)
    sys.exit(exc.status)


@click.group()
@click.version_option(__version__, prog_name="gadgetd")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose):
    """USB gadget daemon: configfs gadget + FunctionFS functions."""
    setup_logging(verbose)


def template_argument():
    return click.argument("template_path", metavar="TEMPLATE",
                          callback=lambda ctx, param, value: templates.resolve(value))


@main.command()
@template_argument()
def check(template_path):
    """Validate TEMPLATE without touching the system (no root needed).

    TEMPLATE is a file or the name of a packaged template (`gadgetd templates`)."""
    try:
        spec = template.load(template_path)
    except GadgetdError as exc:
        fail(exc)
    click.echo(f"{template_path}: ok: gadget {spec.name}, "
               f"{len(spec.configs)} configuration(s), functions: "
               + ", ".join(f"{f.name} ({f.type})" for f in spec.functions.values()))
    types = [f.type for f in spec.functions.values()]
    for warning in host_quirks.warnings(spec) + registry.shadowed(types):
        click.echo(f"{template_path}: warning: {warning}")


@main.command()
@template_argument()
@click.option("--udc", help="UDC to bind (overrides the template's udc).")
@click.option("--nonblock/--blocking", "nonblock", default=None,
              help="ep0_open = nonblock: O_RDWR|O_NDELAY, retried on EAGAIN; or blocking "
                   "(overrides the template's ep0_open).")
@click.option("--no-disconnect/--disconnect", "no_disconnect", default=None,
              help="Mount FunctionFS with no_disconnect=1 (overrides mount.no_disconnect).")
@click.option("--replace", is_flag=True, help="Remove an existing gadget of the same name first.")
@click.option("--wait-for-udc", is_flag=True,
              help="Wait for a UDC to appear instead of failing (the systemd unit uses this).")
def run(template_path, udc, nonblock, no_disconnect, replace, wait_for_udc):
    """Build the gadget from TEMPLATE, bind it and serve it until SIGTERM/SIGINT.

    TEMPLATE is a file or the name of a packaged template (`gadgetd templates`). SIGHUP reloads
    TEMPLATE and re-enumerates; an invalid new template keeps the running one.
    """
    from pathlib import Path

    from gadgetd import template_file
    from gadgetd.supervisor import Supervisor

    def load():  # at start and on SIGHUP
        return template_file.load(Path(template_path)).with_overrides(
            udc=udc, no_disconnect=no_disconnect,
            ep0_open=None if nonblock is None else NONBLOCK if nonblock else BLOCKING)

    try:
        spec = load()
        sys.exit(Supervisor(spec, replace=replace, wait_for_udc=wait_for_udc, reload=load).run())
    except GadgetdError as exc:
        fail(exc)


@main.command()
@template_argument()
@click.argument("function")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for FUNCTION.descriptors and FUNCTION.strings.")
def blobs(template_path, function, out_dir):
    """Write FUNCTION's FunctionFS descriptors and strings as the blob files systemd's
    USBFunctionDescriptors= and USBFunctionStrings= take (a .socket unit with
    ListenUSBFunction= then serves it without gadgetd)."""
    from pathlib import Path

    from gadgetd import registry, wire

    try:
        spec = template.load(template_path)
    except GadgetdError as exc:
        fail(exc)
    fn = spec.ffs_functions.get(function)
    if fn is None or not fn.endpoints:
        known = ", ".join(n for n, f in spec.ffs_functions.items() if f.endpoints) or "none"
        click.echo(f"gadgetd: error: {template_path}: no FunctionFS function {function!r} with "
                   f"an interface and endpoints (those with: {known})", err=True)
        sys.exit(2)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ftype = registry.get(fn.type)  # gadgetd's own types: the flags their workers write
    flags = registry.server_class(ftype).ffs_flags if ftype.server else 0
    for suffix, blob in (("descriptors", wire.descriptors_blob(fn, flags)),
                         ("strings", wire.strings_blob(fn))):
        (out / f"{function}.{suffix}").write_bytes(blob)
        click.echo(out / f"{function}.{suffix}")


@main.command("templates")
def list_templates():
    """The packaged templates: name and path (`gadgetd run NAME` serves one)."""
    for name, path in templates.packaged().items():
        click.echo(f"{name}\t{path}")


@main.command()
@click.argument("name")
def down(name):
    """Unbind and remove gadget NAME: links, configs, functions, FunctionFS mounts."""
    from gadgetd import configfs, ownership, runstate

    if not configfs.gadget_dir(name).exists():
        click.echo(f"gadgetd: error: no gadget {name!r} in {configfs.GADGETS}", err=True)
        sys.exit(1)
    try:
        claim = ownership.claim(name)  # no daemon may start on it while it is being removed
    except GadgetdError as exc:
        click.echo(f"gadgetd: error: {exc}", err=True)
        sys.exit(1)
    failures = configfs.remove_gadget(name)
    if failures:
        sys.exit(1)
    runstate.remove(name)
    claim.release()
    click.echo(f"gadget {name} removed")


@main.command()
@click.option("--nonblock", is_flag=True,
              help="Open with O_RDWR|O_NDELAY, as the failing userland does (default: blocking "
                   "opens with a deadline).")
@click.option("--scenario", "scenarios", multiple=True,
              type=click.Choice(SCENARIOS),
              help="Run only these (repeatable; default: all, in a safe order). The exit status "
                   "is then their verdict.")
@click.option("--duration", type=float, default=20.0, show_default=True,
              help="Seconds of contended opens in contended_open.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of the table.")
@click.option("--record", type=click.Path(dir_okay=False),
              help="Append each scenario's result to FILE as it finishes (JSON lines).")
@click.option("--template", callback=lambda c, p, v: v and templates.resolve(v),
              help="Template of the gadget to test, a file or a packaged name (default: "
                   "loopback).")
@click.option("--host", type=click.Choice(["auto", "local", "remote"]), default="auto",
              show_default=True, help="Who drives the gadget: this machine's host controller "
              "(local), 'gadgetd-hil drive' on another machine (remote: a board, the USB/IP "
              "lab), or local when it enumerates the gadget (auto).")
@click.option("--host-report", type=click.Path(dir_okay=False),
              help="The file 'gadgetd-hil drive --report' writes on the host (shared with this "
                   "machine): its counts are merged into each scenario.")
def repro(nonblock, scenarios, duration, as_json, record, template, host, host_report):
    """Reproduce the ep0 open() regression (e5bf5ee26663) on the running kernel.

    Exit status: 0 absent, 1 present, 125 inconclusive (for git bisect run).
    """
    from pathlib import Path

    from gadgetd.repro.runner import run

    if host_report and host == "local":
        raise click.BadParameter("a host report comes from a remote host (--host remote)",
                                 param_hint="'--host-report'")
    names = list(scenarios) or list(SCENARIOS)
    sys.exit(run(nonblock, names, duration, as_json, Path(record) if record else None,
                 Path(template) if template else None, host=host,
                 host_report=Path(host_report) if host_report else None))


@main.command()
@click.option("--duration", type=float, help="Seconds to trace (default: until Ctrl-C).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of the table.")
def trace(duration, as_json):
    """Who opens ep0/epN (flags, result, duration) and how long ep0 reads and writes hold on.

    kprobe events through tracefs, in a probe group of gadgetd's own, removed on exit.
    Needs root and usb_f_fs loaded.
    """
    from gadgetd.trace import runner
    from gadgetd.trace.btf import BtfError
    from gadgetd.trace.tracefs import TraceError

    try:
        click.echo(runner.main(duration, as_json))
    except (TraceError, BtfError) as exc:
        click.echo(f"gadgetd trace: error: {exc}", err=True)
        sys.exit(1)
    except PermissionError as exc:
        click.echo(f"gadgetd trace: error: {exc.filename}: {exc.strerror} (run as root)", err=True)
        sys.exit(1)


@main.command()
@click.argument("name")
def reload(name):
    """Make the gadgetd serving NAME re-read its template and re-enumerate (SIGHUP)."""
    import os
    import signal

    from gadgetd import ownership

    owner = ownership.holder(name)
    if owner is None or not owner.pid:
        click.echo(f"gadgetd: error: no running gadgetd serves {name!r}", err=True)
        sys.exit(1)
    os.kill(owner.pid, signal.SIGHUP)
    click.echo(f"gadgetd pid {owner.pid} reloading {name}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json):
    """Gadgets, their UDC and its state, function state, counters and ep0 open retries."""
    import json

    from gadgetd import configfs, ownership, runstate
    from gadgetd import udc as udc_mod

    served = {s["name"]: s for s in runstate.read_all()}
    names = sorted(set(served) | {p.name for p in configfs.GADGETS.glob("*")})
    report = []
    for name in names:
        state = dict(served.get(name, {"name": name}))
        owner = ownership.holder(name)
        state["running"] = owner is not None
        if owner is not None:
            state["pid"] = owner.pid
        bound = udc_mod.bound(configfs.gadget_dir(name))
        state["bound"] = bound
        state["kernel_functions"] = configfs.kernel_functions(name)
        try:
            state["udc_state"] = udc_mod.state(bound) if bound else "unbound"
        except OSError:
            state["udc_state"] = "unknown"
        report.append(state)
    if as_json:
        click.echo(json.dumps(report, indent=1, sort_keys=True))
        return
    if not report:
        click.echo("no gadgets")
    for s in report:
        who = f"gadgetd pid {s['pid']}" if s["running"] else "no daemon"
        click.echo(f"{s['name']}: {who}, UDC {s['bound'] or '-'} ({s['udc_state']}), "
                   f"{s.get('recovery_count', 0)} recoveries")
        for fname, f in s.get("functions", {}).items():
            retries = f.get("ep0_retries", {})
            click.echo(f"  {fname}: {f.get('type', '?')} as {f.get('user')}, "
                       f"{'enabled' if f.get('enabled') else 'not enabled'}, "
                       f"events {f.get('events', {})}, counters {f.get('counters', {})}, "
                       f"ep0 opens {retries.get('operations', 0)} with "
                       f"{retries.get('retries_total', 0)} retries {retries.get('retries', {})}")
        for fname, f in s["kernel_functions"].items():
            click.echo(f"  {fname}: {f['driver']} (kernel) "
                       + ", ".join(f"{k} {v}" for k, v in f.items() if k != "driver"))


@main.command("install-service")
@template_argument()
@click.option("--name", help="Instance name (default: the template's gadget name).")
@click.option("--root", default="/", show_default=True, type=click.Path(file_okay=False),
              help="Install under this root instead (an image being built; no systemctl).")
@click.option("--start", is_flag=True, help="Start the service now too.")
def install_service(template_path, name, root, start):
    """Install TEMPLATE as /etc/gadgetd/NAME.toml and enable gadgetd@NAME.service."""
    from pathlib import Path

    from gadgetd.install import install

    try:
        for line in install(Path(template_path), name, Path(root), start):
            click.echo(line)
    except GadgetdError as exc:
        fail(exc)


@main.command("uninstall-service")
@click.argument("name")
@click.option("--root", default="/", show_default=True, type=click.Path(file_okay=False),
              help="The root install-service used.")
def uninstall_service(name, root):
    """Stop and disable gadgetd@NAME.service and remove its template."""
    from pathlib import Path

    from gadgetd.install import uninstall

    try:
        for line in uninstall(name, Path(root)):
            click.echo(line)
    except GadgetdError as exc:
        fail(exc)
