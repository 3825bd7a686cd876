import subprocess
import sys

import pytest


def test_udev_rule_text():
    proc = subprocess.run([sys.executable, "-m", "gadgetd.host.cli", "udev-rule", "--device",
                           "1d6b:0104", "--serial", "S1"], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    rule = proc.stdout.splitlines()[-1]
    assert rule == ('SUBSYSTEM=="usb", ENV{DEVTYPE}=="usb_device", ATTR{idVendor}=="1d6b", '
                    'ATTR{idProduct}=="0104", ATTR{serial}=="S1", MODE="0660", '
                    'GROUP="plugdev", TAG+="uaccess"')


def udev_rule(*args):
    return subprocess.run([sys.executable, "-m", "gadgetd.host.cli", "udev-rule", "--device",
                           "1d6b:0104", *args], capture_output=True, text=True, check=False)


@pytest.mark.parametrize("serial", ['S1", MODE="0666', "S\\1", "a,b", "a=b", "S*", "S?", "S[1]",
                                    'S1\nSUBSYSTEM=="usb", MODE="0666"', "S\t1", "\u00e9",
                                    "x" * 127])
def test_serial_that_is_not_plain_refused(serial):
    proc = udev_rule("--serial", serial)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == (f"gadgetd-hil: error: serial {serial!r}: must be at most 126 printable "
                           'ASCII characters without any of "\\,=*?[\n')


@pytest.mark.parametrize("group", ['plugdev", MODE="0666', "Plugdev", "1users", "a b", "",
                                   "g" * 33, "dialout\n"])
def test_group_that_is_not_a_group_name_refused(group):
    proc = udev_rule("--group", group)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == (f"gadgetd-hil: error: group {group!r}: not a group name "
                           "([a-z_][a-z0-9_-]{0,31})\n")


def test_plain_serial_and_group_accepted():
    proc = udev_rule("--serial", "0123-ABC_x.y ~!", "--group", "_usb-users2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1].endswith(
        'ATTR{serial}=="0123-ABC_x.y ~!", MODE="0660", GROUP="_usb-users2", TAG+="uaccess"')


@pytest.mark.parametrize("device", ["1d6b", "1d6b:", ":0104", "zz:0104", "1d6b:0104:1",
                                    "10000:0104", "-1:0104", ""])
def test_device_that_is_not_vid_pid_refused(device):
    proc = subprocess.run([sys.executable, "-m", "gadgetd.host.cli", "udev-rule", "--device",
                           device], capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1] == (
        f"Error: Invalid value for '--device': {device!r} is not VID:PID "
        "(two hex numbers up to ffff, e.g. 1d6b:0104)")
