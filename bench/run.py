"""`make bench`: build the C baselines, boot the default kernel once, run bench/guest.py in it,
then print absolute figures and ratios (medians over the runs), write JSON and a PNG chart.
The last line is `bench: in=RATIO out=RATIO` (gadgetd over in-kernel SourceSink throughput).
`--usb usbip-loopback` runs the same sides over USB/IP in one kernel (make bench-usbip)."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gadgetd.host import kernels, vm  # noqa: E402

LINKS = {"dummy": "dummy_hcd", "usbip-loopback": "USB/IP: usbip-vudc to vhci-hcd over loopback TCP"}
TARGETS = ("throughput >= 0.95x in-kernel SourceSink and >= 1.0x the C examples, each direction; "
           "bring-up <= 2x ffs-test; peak RSS <= 40 MiB")


def median(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def summarize(results: dict) -> dict:
    rows = results["rows"]
    sides = sorted({r["side"] for r in rows}, key=["gadgetd", "kernel", "ffs_aio_peer",
                                                   "ffs-test", "aio_multibuff"].index)
    table = {}
    for side in sides:
        mine = [r for r in rows if r["side"] == side]
        entry = {"bring_up_s": median([r["bring_up_s"] for r in mine])}
        for direction in ("in", "out"):
            runs = [r[direction] for r in mine if direction in r]
            if runs:
                entry[f"{direction}_mib_s"] = median([r.get("mib_per_s") for r in runs if r["ok"]])
                entry[f"{direction}_failures"] = [
                    f"{r.get('error')} after {r.get('bytes', 0) / 2**20:.1f} MiB" for r in runs
                    if not r["ok"]]
        ctrl = [r["ctrl"] for r in mine if "ctrl" in r and r["ctrl"]["ok"]]
        if ctrl:
            entry["ctrl_p50_us"] = median([c.get("p50_us") for c in ctrl])
            entry["ctrl_p99_us"] = median([c.get("p99_us") for c in ctrl])
        rss = [r["rss_kib"] for r in mine if "rss_kib" in r]
        if rss:
            entry["rss_mib"] = {k: round(max(r[k] for r in rss) / 1024, 1)
                                for k in ("supervisor", "worker")}
        table[side] = entry
    return table


def ratio(a, b):
    return round(a / b, 3) if a and b else None


def render(results: dict, table: dict) -> tuple[str, dict]:
    g = table["gadgetd"]
    k, f, m = table.get("kernel", {}), table.get("ffs-test", {}), table.get("aio_multibuff", {})
    p = table.get("ffs_aio_peer", {})
    ratios = {
        "in_vs_aio_peer": ratio(g.get("in_mib_s"), p.get("in_mib_s")),
        "out_vs_aio_peer": ratio(g.get("out_mib_s"), p.get("out_mib_s")),
        "in_vs_kernel": ratio(g.get("in_mib_s"), k.get("in_mib_s")),
        "out_vs_kernel": ratio(g.get("out_mib_s"), k.get("out_mib_s")),
        "in_vs_ffs_test": ratio(g.get("in_mib_s"), f.get("in_mib_s")),
        "out_vs_ffs_test": ratio(g.get("out_mib_s"), f.get("out_mib_s")),
        "in_vs_aio_multibuff": ratio(g.get("in_mib_s"), m.get("in_mib_s")),
        "bring_up_vs_ffs_test": ratio(g.get("bring_up_s"), f.get("bring_up_s")),
        "ctrl_p50_vs_kernel": ratio(g.get("ctrl_p50_us"), k.get("ctrl_p50_us")),
    }
    runs = len({r["run"] for r in results["rows"]})
    lines = [f"bench on {results['kernel']} ({LINKS[results['usb']]}, high speed): "
             f"host_bulk {results['size']} B x {results['depth']} requests, "
             f"{results['bytes'] >> 20} MiB per direction; medians "
             f"of {runs} alternating runs", "",
             f"{'device side':<15} {'IN MiB/s':>9} {'OUT MiB/s':>10} {'bring-up s':>11} "
             f"{'ctrl p50/p99 us':>16} {'peak RSS MiB':>14}"]
    for side, e in table.items():
        ctrl = (f"{e['ctrl_p50_us']:.0f}/{e['ctrl_p99_us']:.0f}" if e.get("ctrl_p50_us") else "-")
        rss = (f"{e['rss_mib']['supervisor']}+{e['rss_mib']['worker']}" if e.get("rss_mib")
               else "-")
        lines.append(f"{side:<15} {e.get('in_mib_s') or '-':>9} {e.get('out_mib_s') or '-':>10} "
                     f"{e['bring_up_s']:>11} {ctrl:>16} {rss:>14}")
        for direction in ("in", "out"):
            for failure in dict.fromkeys(e.get(f"{direction}_failures") or []):
                lines.append(f"{'':<15} {direction.upper()} failed: {failure}")
    ep0 = results["ep0_open_ms"]
    lines += ["", "ep0 open under contention (ms, p50/p99/max): "
              + "; ".join(f"{mode} {v.get('p50')}/{v.get('p99')}/{v.get('max')} (n={v.get('n')})"
                          for mode, v in ep0.items()),
              "", "ratios: " + ", ".join(f"{k}={v}" for k, v in ratios.items()),
              f"targets: {TARGETS}"]
    rss_total = sum(g.get("rss_mib", {}).values()) if g.get("rss_mib") else None
    checks = {
        "in >= 0.95x kernel": (ratios["in_vs_kernel"] or 0) >= 0.95,
        "out >= 0.95x kernel": (ratios["out_vs_kernel"] or 0) >= 0.95,
        "in >= 1.0x ffs-test": (ratios["in_vs_ffs_test"] or 0) >= 1.0,
        "out >= 1.0x ffs-test": (ratios["out_vs_ffs_test"] or 0) >= 1.0,
        "in >= 1.0x aio_multibuff": (ratios["in_vs_aio_multibuff"] or 0) >= 1.0,
        "bring-up <= 2x ffs-test": 0 < (ratios["bring_up_vs_ffs_test"] or 99) <= 2.0,
        "peak RSS <= 40 MiB": rss_total is not None and rss_total <= 40,
    }
    lines += [f"  {'met' if ok else 'NOT MET'}: {name}" for name, ok in checks.items()]
    return "\n".join(lines), {"ratios": ratios, "checks": checks}


def chart(table: dict, path: Path, usb: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sides = list(table)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    x = range(len(sides))
    for offset, direction in ((-0.2, "in"), (0.2, "out")):
        ax1.bar([i + offset for i in x], [table[s].get(f"{direction}_mib_s") or 0 for s in sides],
                width=0.4, label=direction.upper())
    ax1.set_xticks(list(x), sides)
    ax1.set_ylabel("MiB/s")
    ax1.set_title(f"bulk throughput (host_bulk, {LINKS[usb].split(':')[0]})")
    ax1.legend()
    ax2.bar(sides, [table[s]["bring_up_s"] for s in sides], color="tab:gray")
    ax2.set_ylabel("seconds")
    ax2.set_title("bring-up: exec to configured by the host")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--kernel", default=kernels.DEFAULT_SPEC)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench")
    parser.add_argument("--usb", choices=list(LINKS), default="dummy",
                        help="the VM's USB stack (gadgetd-hil vm --usb)")
    args = parser.parse_args()
    build = ROOT / "out" / "bench-build"
    subprocess.run(["sh", str(ROOT / "bench/build.sh"), str(build)], check=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").unlink(missing_ok=True)
    result = vm.run(kernels.resolve(args.kernel),
                    [sys.executable, str(ROOT / "bench/guest.py"), "--build", str(build),
                     "--runs", str(args.runs), "--out", str(args.out)],
                    timeout=7200, results=args.out, usb=args.usb)
    if result.status != 0 or not (args.out / "results.json").exists():
        print(f"bench: the VM run failed (exit {result.status})", file=sys.stderr)
        return 1
    results = json.loads((args.out / "results.json").read_text())
    table = summarize(results)
    text, verdict = render(results, table)
    chart(table, args.out / "bench.png", results["usb"])
    (args.out / "bench.json").write_text(json.dumps({**results, "summary": table, **verdict},
                                                    indent=1))
    print(text)
    print(f"wrote {args.out / 'bench.json'} and {args.out / 'bench.png'}")
    r = verdict["ratios"]
    print(f"bench: in={r['in_vs_kernel']} out={r['out_vs_kernel']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
