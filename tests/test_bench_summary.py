"""make bench's summary lines and goals, from a results file's rows (bench/run.py)."""

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "bench_run", Path(__file__).resolve().parents[1] / "bench" / "run.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def _row(side, run, bring_up, **fields):
    row = {"run": run, "side": side, "bring_up_s": bring_up}
    for direction in ("in", "out"):
        if direction in fields:
            row[direction] = {"ok": True, "mib_per_s": fields.pop(direction)}
    return {**row, **fields}


def _results(pss_kib=20 * 1024):
    rows = []
    for run in range(3):
        rows += [
            _row("gadgetd", run, 1.2 + run / 10, **{"in": 95.0, "out": 96.0},
                 ctrl={"ok": True, "p50_us": 300, "p99_us": 900}, pss_kib=pss_kib + run),
            _row("kernel", run, 0.2, **{"in": 200.0, "out": 190.0},
                 ctrl={"ok": True, "p50_us": 200, "p99_us": 450}),
            _row("ffs_aio_peer", run, 0.3, **{"in": 100.0, "out": 100.0}),
            _row("ffs-test", run, 0.4, **{"in": 50.0, "out": 60.0}),
            _row("ffs_aio_peer_deep", run, 0.3, **{"in": 89.0}),
            _row("aio_multibuff", run, 0.3, **{"in": 90.0}),
            _row("python", run, 0.5),
        ]
    return {"kernel": "6.1.0-57-amd64", "usb": "dummy", "size": 65536, "depth": 8,
            "bytes": 64 << 20, "rows": rows, "ep0_open_ms": {}}


def test_the_five_summary_lines():
    results = _results()
    text, verdict = bench.render(results, bench.summarize(results))
    assert verdict["lines"] == [
        "bench: in=0.950 out=0.960",
        "bench-kernel: in=0.475 out=0.505 dmabuf_in=none dmabuf_out=none",
        "bench-bringup: gadgetd=1.300 python=0.500 ffs_test=0.400",
        "bench-ctrl: p50=1.500 p99=2.000",
        "bench-rss: pss_mib=20.002",
    ]
    assert verdict["checks"] == {
        "in >= 0.95x C peer": True, "out >= 0.95x C peer": True,
        "C peer in >= ffs-test": True, "C peer out >= ffs-test": True,
        "C peer in >= aio_multibuff": True,
        "C peer shaped like aio_multibuff in >= aio_multibuff": False,  # 89 < 90
        "bring-up <= python + 1.5x ffs-test": False,  # 1.3 > 0.5 + 0.6
        "ctrl p50 <= 1.5x kernel": True, "peak PSS <= 30 MiB": True,
    }
    assert "NOT MET: bring-up <= python + 1.5x ffs-test" in text


def test_a_figure_that_does_not_exist_is_none():
    results = _results()
    results["rows"] = [r for r in results["rows"] if r["side"] not in ("ffs_aio_peer", "python")]
    for row in results["rows"]:
        row.pop("pss_kib", None)
    _, verdict = bench.render(results, bench.summarize(results))
    assert verdict["lines"][0] == "bench: in=none out=none"
    assert verdict["lines"][2] == "bench-bringup: gadgetd=1.300 python=none ffs_test=0.400"
    assert verdict["lines"][4] == "bench-rss: pss_mib=none"
    assert not verdict["checks"]["in >= 0.95x C peer"]
    assert not verdict["checks"]["peak PSS <= 30 MiB"]
