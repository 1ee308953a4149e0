"""What the recipe's tracking server holds in memory with MLflow's job runner and without it
(docs/operations.md, "The tracking server: authenticated"). ganlab uses none of MLflow's server
jobs (GenAI features); MLflow starts their runner by default.

Run by hand on an idle machine (the figures are the machine's), ~1 min:

    python benchmarks/tracking_server_memory.py

Starts the recipe's server (basic auth, MLflow's default 4 workers, SQLite) with
MLFLOW_SERVER_ENABLE_JOB_EXECUTION true and false, waits until it has settled, and sums its
process tree: processes, resident memory (RSS, shared pages counted in each process) and
proportional memory (PSS, shared pages split: what the tree takes from the machine).
Writes benchmarks/tracking_server_memory.json.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.default_run import cpu_model  # noqa: E402
from tests.shared_server import tracking_server  # noqa: E402

SETTLE_S = 15  # the job runner's consumers start after the server answers


def measure(jobs: bool) -> dict:
    import psutil  # DVC's own dependency

    with tracking_server("sqlite", jobs=jobs) as (_, server):
        time.sleep(SETTLE_S)
        root = psutil.Process(server.process.pid)
        procs = [root, *root.children(recursive=True)]
        mem = [p.memory_full_info() for p in procs]
        commands = [" ".join(p.cmdline()) for p in procs]
    return {"job_execution": jobs, "processes": len(procs), "job_runner_processes": sum("huey" in c for c in commands),
            "rss_mb": round(sum(m.rss for m in mem) / 2**20), "pss_mb": round(sum(m.pss for m in mem) / 2**20)}


def main() -> None:
    import mlflow

    rows = [measure(jobs) for jobs in (True, False)]
    out = {"cpu": cpu_model(), "mlflow": mlflow.__version__, "settle_s": SETTLE_S, "servers": rows}
    path = REPO / "benchmarks" / "tracking_server_memory.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    for row in rows:
        print(row)
    print(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
