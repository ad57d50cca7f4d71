"""Start-up wall time of the command line: ``--version``/``--help`` and a one-text ``predict``.

Every command is a fresh process (what a user waits for), timed with ``hyperfine``
(``apt-get install hyperfine``), after one warm-up run so files are in the page cache.
``--src`` runs the commands with that source tree first on the path (e.g. a checkout of an
older version, to compare before/after in one run). Run from the repository root::

    python bench/startup.py --torch-bundle TORCH_BUNDLE --onnx-bundle EXPORTED_BUNDLE \\
        --out bench/results/startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

TEXT = "I lost my card"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--torch-bundle", required=True)
    parser.add_argument("--onnx-bundle", required=True, help="Exported with --int8.")
    parser.add_argument("--src", default="src")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", default="bench/results/startup.json")
    args = parser.parse_args()
    tf = f"{sys.executable} -m tuneforge"
    commands = {
        "help": f"{tf} --help",
        "predict torch": f"{tf} predict {args.torch_bundle} '{TEXT}'",
        "predict onnx-int8": f"{tf} predict {args.onnx_bundle} --backend onnx-int8 '{TEXT}'",
        "predict auto (exported bundle)": f"{tf} predict {args.onnx_bundle} '{TEXT}'",
    }
    if (Path(args.src) / "tuneforge" / "cli" / "main.py").read_text().count("--version"):
        commands = {"version": f"{tf} --version", **commands}
    env = {**os.environ, "PYTHONPATH": str(Path(args.src).resolve()), "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "hyperfine.json"
        cmd = ["hyperfine", "-N", "-w", "1", "-r", str(args.runs), "--export-json", str(raw)]
        for name, command in commands.items():
            cmd += ["-n", name, command]
        uptime_start = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        subprocess.run(cmd, env=env, check=True)
        results = json.loads(raw.read_text())["results"]
    uptime_end = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if "Model name" in ln), "")
    out = {
        "cpu": {"model": model, "cpus": os.cpu_count()},
        "src": args.src,
        "uptime_start": uptime_start,
        "uptime_end": uptime_end,
        "results": {
            r["command"]: {
                "median_s": round(r["median"], 3),
                "min_s": round(r["min"], 3),
                "max_s": round(r["max"], 3),
                "user_s_mean": round(r["user"], 3),
                "system_s_mean": round(r["system"], 3),
                "runs": len(r["times"]),
                "command": commands[r["command"]],
            }
            for r in results
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["results"], indent=2))


if __name__ == "__main__":
    main()
