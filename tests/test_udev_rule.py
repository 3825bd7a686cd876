import subprocess
import sys


def test_udev_rule_text():
    proc = subprocess.run([sys.executable, "-m", "gadgetd.host.cli", "udev-rule", "--device",
                           "1d6b:0104", "--serial", "S1"], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    rule = proc.stdout.splitlines()[-1]
    assert rule == ('SUBSYSTEM=="usb", ENV{DEVTYPE}=="usb_device", ATTR{idVendor}=="1d6b", '
                    'ATTR{idProduct}=="0104", ATTR{serial}=="S1", MODE="0660", '
                    'GROUP="plugdev", TAG+="uaccess"')
