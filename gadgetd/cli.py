"""`gadgetd`: the board-side command line."""

from __future__ import annotations

import logging
import os
import sys

import click

from gadgetd import __version__, template
from gadgetd.errors import GadgetdError


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


@main.command()
@click.argument("template_path", metavar="TEMPLATE", type=click.Path(dir_okay=False))
def check(template_path):
    """Validate TEMPLATE without touching the system (no root needed)."""
    try:
        spec = template.load(template_path)
    except GadgetdError as exc:
        fail(exc)
    click.echo(f"{template_path}: ok: gadget {spec.name}, "
               f"{len(spec.configs)} configuration(s), functions: "
               + ", ".join(f"{f.name} ({f.type})" for f in spec.functions.values()))


@main.command()
@click.argument("template_path", metavar="TEMPLATE", type=click.Path(dir_okay=False))
@click.option("--udc", help="UDC to bind (overrides the template's udc).")
@click.option("--nonblock/--blocking", default=None,
              help="Open ep0 with O_RDWR|O_NDELAY and retry on EAGAIN (overrides ep0_open).")
@click.option("--no-disconnect/--disconnect", "no_disconnect", default=None,
              help="Mount FunctionFS with no_disconnect=1 (overrides mount.no_disconnect).")
@click.option("--replace", is_flag=True, help="Remove an existing gadget of the same name first.")
def run(template_path, udc, nonblock, no_disconnect, replace):
    """Build the gadget from TEMPLATE, bind it and serve it until SIGTERM/SIGINT."""
    from gadgetd.daemon import Daemon

    try:
        spec = template.load(template_path).with_overrides(
            udc=udc, no_disconnect=no_disconnect, nonblock=nonblock)
        sys.exit(Daemon(spec, replace=replace).run())
    except GadgetdError as exc:
        fail(exc)


@main.command()
@click.argument("name")
def down(name):
    """Unbind and remove gadget NAME: links, configs, functions, FunctionFS mounts."""
    from gadgetd import configfs

    if not configfs.gadget_dir(name).exists():
        click.echo(f"gadgetd: error: no gadget {name!r} in {configfs.GADGETS}", err=True)
        sys.exit(1)
    failures = configfs.remove_gadget(name)
    if failures:
        sys.exit(1)
    click.echo(f"gadget {name} removed")


@main.command()
@click.option("--nonblock", is_flag=True,
              help="Open with O_RDWR|O_NDELAY, as the failing userland does (default: blocking "
                   "opens with a deadline).")
@click.option("--scenario", "scenarios", multiple=True,
              type=click.Choice(["contended_open", "deactivated_set_alt", "open_race",
                                 "deactivated_reopen"]),
              help="Run only these (repeatable; default: all, in a safe order).")
@click.option("--duration", type=float, default=20.0, show_default=True,
              help="Seconds of contended opens in contended_open.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of the table.")
@click.option("--record", type=click.Path(dir_okay=False),
              help="Append each scenario's result to FILE as it finishes (JSON lines).")
@click.option("--template", type=click.Path(exists=True, dir_okay=False),
              help="Template of the gadget to test (default: the loopback template).")
def repro(nonblock, scenarios, duration, as_json, record, template):
    """Reproduce the ep0 open() regression (e5bf5ee26663) on the running kernel.

    Exit status: 0 absent, 1 present, 125 inconclusive (for git bisect run).
    """
    from pathlib import Path

    from gadgetd.repro.report import SCENARIOS
    from gadgetd.repro.runner import run

    names = list(scenarios) or list(SCENARIOS)
    sys.exit(run(nonblock, names, duration, as_json, Path(record) if record else None,
                 Path(template) if template else None))
