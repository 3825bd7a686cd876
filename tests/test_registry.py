"""The function registry's lookup of gadgetd's own types (gadgetd.registry)."""

import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

from gadgetd import registry, templates

ROOT = Path(__file__).resolve().parents[1]


def test_own_types_mirror_the_entry_points_pyproject_declares():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert registry.OWN == declared["project"]["entry-points"][registry.GROUP]
    installed = {ep.name: ep.value for ep in entry_points(group=registry.GROUP)}
    assert registry.OWN.items() <= installed.items()


def test_every_own_type_loads_as_the_type_of_its_name():
    for name in registry.OWN:
        assert registry.get(name).name == name


def test_serving_own_types_reads_no_distribution_metadata():
    # The run path up to the workers: the CLI, a template of gadgetd's own types, the supervisor.
    code = ("import sys; import gadgetd.cli, gadgetd.supervisor; from gadgetd import template, "
            "templates\nfor name in ('sourcesink', 'pizero-composite', 'mtp'): "
            "template.load(templates.path(name))\nprint('importlib.metadata' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_unknown_type_names_every_registered_one():
    try:
        registry.get("no-such-type")
    except registry.RegistryError as exc:
        assert "no function type 'no-such-type' is registered" in str(exc)
        assert "loopback" in str(exc) and "mass_storage" in str(exc)
    else:
        raise AssertionError("no error for an unregistered type")


def test_a_plugin_naming_an_own_type_is_reported_by_check(monkeypatch):
    from click.testing import CliRunner

    from gadgetd import cli

    # gadgetd's own ncm listed after the plugin's: found whatever the distributions' order
    plugins = (("ncm", "someone.functions:NCM"), ("theirs", "someone.functions:X"),
               *registry.OWN.items())
    monkeypatch.setattr(registry, "_entry_points", lambda: plugins)
    assert registry.shadowed(["ncm", "loopback", "theirs", "ncm"]) == [
        "function type 'ncm' is gadgetd's own; the plugin entry point ncm = someone.functions:NCM "
        "is ignored"]
    result = CliRunner().invoke(cli.main, ["check", "pizero-composite"])
    assert result.exit_code == 0
    assert [line for line in result.output.splitlines() if ": warning: " in line] == [
        f"{templates.path('pizero-composite')}: warning: function type 'ncm' is gadgetd's own; "
        "the plugin entry point ncm = someone.functions:NCM is ignored"]
    monkeypatch.setattr(registry, "_entry_points", lambda: tuple(registry.OWN.items()))
    assert "warning: function type" not in CliRunner().invoke(
        cli.main, ["check", "pizero-composite"]).output


def test_a_type_two_plugins_register_is_refused(monkeypatch):
    plugins = (("greeting", "b.functions:GREETING"), ("greeting", "a.functions:GREETING"),
               *registry.OWN.items())
    monkeypatch.setattr(registry, "_entry_points", lambda: plugins)
    registry.get.cache_clear()
    try:
        registry.get("greeting")
    except registry.RegistryError as exc:
        assert str(exc) == ("function type 'greeting' is registered by more than one plugin: "
                            "a.functions:GREETING, b.functions:GREETING (uninstall all but one)")
    else:
        raise AssertionError("no error for a type two plugins register")
    finally:
        registry.get.cache_clear()
