"""Detection power of `gadgetd repro --nonblock`: how often contended_open sees the regression.

On the host: boots each kernel once and runs the contended_open scenario RUNS times in a row
inside it (the reopen hang, being deterministic, would end the boot), then prints detections.

    python bench/detection_power.py --present debian:6.1.0-56-amd64 --absent debian:6.1.0-54-amd64
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def guest(runs: int, duration: float, out: Path) -> int:
    verdicts = []
    for i in range(runs):
        print(f"run {i + 1}/{runs} ...", file=sys.stderr, flush=True)
        try:
            proc = subprocess.run([sys.executable, "-m", "gadgetd", "repro", "--nonblock",
                                   "--json", "--scenario", "contended_open",
                                   "--duration", str(duration)],
                                  capture_output=True, text=True, check=False, timeout=900)
            report = json.loads(proc.stdout)
        except (subprocess.TimeoutExpired, ValueError) as exc:
            print(f"run {i + 1}: no report: {exc}", file=sys.stderr, flush=True)
            verdicts.append({"verdict": "error", "exit": None, "eagain": 0, "attempts": 0})
            continue
        s = report["scenarios"]["contended_open"]
        verdicts.append({"verdict": s["verdict"], "exit": proc.returncode,
                         "eagain": s["counts"].get("nonblock-once_EAGAIN", 0),
                         "attempts": s["counts"].get("nonblock-once_attempts", 0)})
        print(f"run {i + 1}/{runs}: {verdicts[-1]}", file=sys.stderr, flush=True)
        with open(out, "w") as f:
            json.dump(verdicts, f)
    return 0


def host(args) -> int:
    from gadgetd.host import kernels, vm

    summary = {}
    for role, spec in (("present", args.present), ("absent", args.absent)):
        kernel = kernels.resolve(spec)
        result_dir = vm.new_result_dir()
        out = result_dir / "runs.json"
        vm.run(kernel, [sys.executable, __file__, "--guest", "--runs", str(args.runs),
                        "--duration", str(args.duration), "--out", str(out)],
               timeout=args.runs * 200, result_dir=result_dir)
        runs = json.loads(out.read_text()) if out.exists() else []
        detected = sum(r["verdict"] == "present" for r in runs)
        summary[role] = {"kernel": kernel.release, "package": kernel.package_version,
                         "runs": len(runs), "detected": detected,
                         "eagain_per_run": [r["eagain"] for r in runs]}
        print(f"{role:>8}: {kernel.release} ({kernel.package_version}): regression reported in "
              f"{detected} of {len(runs)} runs")
    Path(args.json).write_text(json.dumps(summary, indent=1))
    ok = (summary["present"]["detected"] == summary["present"]["runs"] == args.runs
          and summary["absent"]["detected"] == 0 and summary["absent"]["runs"] == args.runs)
    print(f"detection power: {summary['present']['detected']}/{summary['present']['runs']} on "
          f"{summary['present']['kernel']}, false positives {summary['absent']['detected']}/"
          f"{summary['absent']['runs']} on {summary['absent']['kernel']}")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--guest", action="store_true")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--present", default="debian:6.1.0-56-amd64")
    parser.add_argument("--absent", default="debian:6.1.0-54-amd64")
    parser.add_argument("--json", default="out/detection_power.json")
    args = parser.parse_args()
    if args.guest:
        return guest(args.runs, args.duration, args.out)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    return host(args)


if __name__ == "__main__":
    sys.exit(main())
