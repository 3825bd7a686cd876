"""`make bench`: build the C baselines, boot the default kernel once, run bench/guest.py in it,
then print absolute figures and ratios (medians over the runs), write JSON and a PNG chart.
It ends with five summary lines (`none` where a figure does not exist): gadgetd over
the C FunctionFS AIO peer, over in-kernel SourceSink, bring-up in seconds beside the venv's
`python -c pass` and ffs-test, control round trip over in-kernel, peak PSS.
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

from bench import pyspy  # noqa: E402
from gadgetd.host import kernels, vm  # noqa: E402

LINKS = {"dummy": "dummy_hcd", "usbip-loopback": "USB/IP: usbip-vudc to vhci-hcd over loopback TCP"}
SIDES = ["gadgetd", "kernel", "ffs_aio_peer", "ffs_aio_peer_deep", "ffs-test", "aio_multibuff",
         "python"]
PSS_LIMIT_MIB = 30


def median(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def summarize(results: dict) -> dict:
    rows = results["rows"]
    sides = sorted({r["side"] for r in rows}, key=SIDES.index)
    table = {}
    for side in sides:
        mine = [r for r in rows if r["side"] == side]
        entry = {"bring_up_s": median([r["bring_up_s"] for r in mine])}
        for direction in ("in", "out"):
            runs = [r[direction] for r in mine if direction in r]
            if runs:
                entry[f"{direction}_mib_s"] = median([r.get("mib_per_s") for r in runs if r["ok"]])
                entry[f"{direction}_cpu_s"] = median([r.get("device_cpu_s") for r in runs])
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
        pss = [r["pss_kib"] for r in mine if r.get("pss_kib")]
        if pss:
            entry["pss_mib"] = round(max(pss) / 1024, 3)
        table[side] = entry
    return table


def ratio(a, b):
    return round(a / b, 3) if a and b else None


def fmt(value) -> str:
    return "none" if value is None else f"{value:.3f}"


def summary(table: dict, ratios: dict) -> list[str]:
    """The five lines `make bench` ends with."""
    bring_up = {side: table.get(side, {}).get("bring_up_s") for side in SIDES}
    return [
        f"bench: in={fmt(ratios['in_vs_aio_peer'])} out={fmt(ratios['out_vs_aio_peer'])}",
        f"bench-kernel: in={fmt(ratios['in_vs_kernel'])} out={fmt(ratios['out_vs_kernel'])} "
        "dmabuf_in=none dmabuf_out=none",  # no UDC here can carry it: gadgetd/dmabuf.py
        f"bench-bringup: gadgetd={fmt(bring_up['gadgetd'])} python={fmt(bring_up['python'])} "
        f"ffs_test={fmt(bring_up['ffs-test'])}",
        f"bench-ctrl: p50={fmt(ratios['ctrl_p50_vs_kernel'])} "
        f"p99={fmt(ratios['ctrl_p99_vs_kernel'])}",
        f"bench-rss: pss_mib={fmt(table['gadgetd'].get('pss_mib'))}",
    ]


def goals(table: dict, ratios: dict) -> dict[str, bool]:
    """Issue 16's goals, each met or not in this run."""
    g, p = table["gadgetd"], table.get("ffs_aio_peer", {})
    python, ffs_test = (table.get(s, {}).get("bring_up_s") for s in ("python", "ffs-test"))
    at_least = {f"C peer {d} >= {other}": (p.get(f"{d}_mib_s") or 0) >=
                (table.get(other, {}).get(f"{d}_mib_s") or float("inf"))
                for d, other in (("in", "ffs-test"), ("out", "ffs-test"),
                                 ("in", "aio_multibuff"))}
    deep = table.get("ffs_aio_peer_deep", {}).get("in_mib_s") or 0
    return {
        "in >= 0.95x C peer": (ratios["in_vs_aio_peer"] or 0) >= 0.95,
        "out >= 0.95x C peer": (ratios["out_vs_aio_peer"] or 0) >= 0.95,
        **at_least,
        "C peer shaped like aio_multibuff in >= aio_multibuff":
            deep >= (table.get("aio_multibuff", {}).get("in_mib_s") or float("inf")),
        "bring-up <= python + 1.5x ffs-test": None not in (python, ffs_test) and
        g["bring_up_s"] <= python + 1.5 * ffs_test,
        "ctrl p50 <= 1.5x kernel": 0 < (ratios["ctrl_p50_vs_kernel"] or 99) <= 1.5,
        f"peak PSS <= {PSS_LIMIT_MIB} MiB": 0 < (g.get("pss_mib") or 99) <= PSS_LIMIT_MIB,
    }


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
        "ctrl_p99_vs_kernel": ratio(g.get("ctrl_p99_us"), k.get("ctrl_p99_us")),
        "ctrl_p50_c_peer_vs_kernel": ratio(p.get("ctrl_p50_us"), k.get("ctrl_p50_us")),
    }
    runs = len({r["run"] for r in results["rows"]})
    lines = [f"bench on {results['kernel']} ({LINKS[results['usb']]}, high speed): "
             f"host_bulk {results['size']} B x {results['depth']} requests, "
             f"{results['bytes'] >> 20} MiB per direction; medians "
             f"of {runs} alternating runs; CPU s: the device side's processes during the "
             "transfer", "",
             f"{'device side':<18} {'IN MiB/s':>9} {'OUT MiB/s':>10} {'bring-up s':>11} "
             f"{'ctrl p50/p99 us':>16} {'peak RSS MiB':>14} {'peak PSS MiB':>13} "
             f"{'CPU s IN/OUT':>13}"]
    for side, e in table.items():
        ctrl = (f"{e['ctrl_p50_us']:.0f}/{e['ctrl_p99_us']:.0f}" if e.get("ctrl_p50_us") else "-")
        rss = (f"{e['rss_mib']['supervisor']}+{e['rss_mib']['worker']}" if e.get("rss_mib")
               else "-")
        cpu = "/".join(f"{e[k]:.2f}" if e.get(k) is not None else "-"
                       for k in ("in_cpu_s", "out_cpu_s"))
        lines.append(f"{side:<18} {e.get('in_mib_s') or '-':>9} {e.get('out_mib_s') or '-':>10} "
                     f"{e['bring_up_s']:>11} {ctrl:>16} {rss:>14} {e.get('pss_mib') or '-':>13} "
                     f"{cpu if cpu != '-/-' else '-':>13}")
        for direction in ("in", "out"):
            for failure in dict.fromkeys(e.get(f"{direction}_failures") or []):
                lines.append(f"{'':<18} {direction.upper()} failed: {failure}")
    traced = results.get("bring_up")
    if traced:
        lines += ["", "gadgetd's bring-up, one traced run (strace on the step syscalls only; "
                  "import timing on): " + "; ".join(
                      f"{name} {'-' if s is None else f'{s:.3f} s'}"
                      for name, s in traced["phases"]),
                  "slowest top-level imports (supervisor and worker): " + ", ".join(
                      f"{name} {s:.3f} s" for name, s in traced["imports"])]
    for name, found in results.get("profiles", {}).items():
        lines += ["", f"py-spy on gadgetd's worker during {name} ({found['samples']} samples), "
                  "share of samples, self: " + ", ".join(f"{f} {v:.0%}" for f, v in found["self"]),
                  "  total: " + ", ".join(f"{f} {v:.0%}" for f, v in found["total"])]
    ep0 = results["ep0_open_ms"]
    lines += ["", "ep0 open under contention (ms, p50/p99/max): "
              + "; ".join(f"{mode} {v.get('p50')}/{v.get('p99')}/{v.get('max')} (n={v.get('n')})"
                          for mode, v in ep0.items()),
              "", "ratios: " + ", ".join(f"{k}={v}" for k, v in ratios.items()), "goals:"]
    checks = goals(table, ratios)
    lines += [f"  {'met' if ok else 'NOT MET'}: {name}" for name, ok in checks.items()]
    return "\n".join(lines), {"ratios": ratios, "checks": checks,
                              "lines": summary(table, ratios)}


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
    ax2.bar(sides, [table[s]["bring_up_s"] or 0 for s in sides], color="tab:gray")
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
    for stale in ("results.json", "profile-out.txt", "profile-ctrl.txt"):
        (args.out / stale).unlink(missing_ok=True)
    result = vm.run(kernels.resolve(args.kernel),
                    [sys.executable, str(ROOT / "bench/guest.py"), "--build", str(build),
                     "--runs", str(args.runs), "--out", str(args.out)],
                    timeout=7200, results=args.out, usb=args.usb)
    if result.status != 0 or not (args.out / "results.json").exists():
        print(f"bench: the VM run failed (exit {result.status})", file=sys.stderr)
        return 1
    results = json.loads((args.out / "results.json").read_text())
    results["profiles"] = {  # bench/guest.py's py-spy runs on gadgetd's worker
        name: pyspy.top(path.read_text()) for name in ("out", "ctrl")
        if (path := args.out / f"profile-{name}.txt").exists()}
    table = summarize(results)
    text, verdict = render(results, table)
    chart(table, args.out / "bench.png", results["usb"])
    (args.out / "bench.json").write_text(json.dumps({**results, "summary": table, **verdict},
                                                    indent=1))
    print(text)
    print(f"wrote {args.out / 'bench.json'} and {args.out / 'bench.png'}")
    print("\n".join(verdict["lines"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
