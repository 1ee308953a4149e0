"""Many machines, one tracking server: what a shared server costs each training, and how many
points a second it takes (docs/operations.md, "The tracking server: authenticated").

Run by hand on an idle machine, as root for isolated machines (the figures are the machine's):

    python benchmarks/tracking_load.py                      # ~25 min on 2 cores
    python benchmarks/tracking_load.py --machines 1 8 --backends sqlite

Two measurements, each with SQLite and with PostgreSQL behind the recipe's server (basic auth,
4 workers, artifacts on the server):
* Machines: N clones (tests/shared_server.py), each in a folder the others cannot see, train and
  evaluate one experiment of one study at the same moment (3 epochs of 256 MNIST images, one
  thread each); the same N with a local store each (no server) is the baseline. Every round is
  audited as tests/test_tracking_load.py does (nothing lost or doubled). Per training: wall time and
  the seconds spent in MLflow calls (train's Tracking callback, evaluate's MLflow phase).
* Replay: C clients log a recorded training's per-epoch batches of iteration metrics as fast as the
  server takes them: points per second and request latency, C up to 64 (the server's capacity, with
  the clients on the same cores).
Also the recipe without its auth cache (every request hashes the password) at 8 machines.
Writes benchmarks/tracking_load.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.default_run import cpu_model  # noqa: E402
from tests.conftest import stop_stage_servers  # noqa: E402
from tests.shared_server import (AUTH_CACHE_S, CLIENT_TROUBLE, SERVER_ERRORS, audit, expected_points,  # noqa: E402
                                 isolation_missing, make_machines, postgres_missing, run_at_once, tracking_server,
                                 trouble)
from tests.test_tracking_load import STUDY, origin_with_data  # noqa: E402

OUT = REPO / "benchmarks" / "tracking_load.json"


def phase_seconds(machine, name: str) -> tuple[float, float]:
    """(seconds in MLflow calls, process seconds) of the machine's train and evaluate stages."""
    mlflow_s = process_s = 0.0
    for line in (machine.folder / "phases.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["stage"] in (f"train@{name}", f"evaluate@{name}"):
            mlflow_s += record.get("Tracking", 0.0) + record.get("mlflow", 0.0)
            process_s += record["process"]
    return mlflow_s, process_s


def machines_round(backend: str, count: int, auth_cache_s: int | None = None) -> dict:
    """N machines at once against `backend`; audited; per-training figures."""
    options = {} if auth_cache_s is None else {"auth_cache_s": auth_cache_s}
    with tracking_server(backend, **options) as (base, server):
        server_env = {"MLFLOW_TRACKING_URI": server.url, **server.admin_env()} if server else {}
        password = server.add_user("trainer-a", "trainer") if server else None
        origin, experiments = origin_with_data(base, server_env, count)
        isolated = not isolation_missing()
        machines = make_machines(base, origin, count, shared=(base / "dvc-remote",), isolated=isolated)
        names = dict(zip((m.name for m in machines), experiments))
        credentials = {"MLFLOW_TRACKING_URI": server.url, "MLFLOW_TRACKING_USERNAME": "trainer-a",
                       "MLFLOW_TRACKING_PASSWORD": password} if server else {}
        envs = [m.env(GANLAB_PHASES=str(m.folder / "phases.jsonl"), **credentials) for m in machines]
        run_at_once(machines, ["python -m dvc fetch -q --run-cache"] * count, envs, base / "logs")
        started = time.time()
        try:
            results = run_at_once(machines, [f"python -m dvc repro -q --pull evaluate@{names[m.name]}" for m in machines],
                                  envs, base / "logs")
        finally:
            stop_stage_servers(m.tmpdir for m in machines)
        wall = time.time() - started
        failed = [r["machine"] for r in results if r["exit"] != 0]
        problems = []
        if server and not failed:
            os.environ.update(server.admin_env())
            from mlflow.tracking import MlflowClient

            problems = audit(MlflowClient(server.url), STUDY, machines, names)
        points = sum(len(v) for m in machines for v in expected_points(m.repo / "runs" / names[m.name]).values())
        per_training = [phase_seconds(m, names[m.name]) for m in machines]
        return {
            "backend": backend, "machines": count, "isolated": isolated,
            "auth_cache_s": (AUTH_CACHE_S if auth_cache_s is None else auth_cache_s) if server else None,
            "failed": failed, "audit_problems": problems[:20],
            "server_log_errors": trouble(server.log_text(), SERVER_ERRORS)[:20] if server else [],
            "client_trouble": [line for r in results for line in trouble(r["output"], CLIENT_TROUBLE)][:20],
            "wall_s": round(wall, 1), "points": points, "points_per_s": round(points / wall, 1),
            "training_wall_s": [r["wall_s"] for r in results],
            "mlflow_s_per_training": [round(m, 2) for m, _ in per_training],
            "median_mlflow_s": round(statistics.median(m for m, _ in per_training), 2),
            "median_stage_process_s": round(statistics.median(p for _, p in per_training), 2),
        }


REPLAY_CLIENT = r"""
import json, os, sys, time
sys.path.insert(0, os.environ["GANLAB_REPO"])
from pipeline.tracking.run import Run
batches = json.loads(sys.stdin.read())
run = Run.start(os.environ["STUDY"], os.environ["RUN_NAME"], params={}, tags={"replay": "1"})
latencies = []
start = time.time()
for batch in batches:
    t = time.perf_counter()
    run.log_metric_rows([(row["step"], row["values"]) for row in batch])
    latencies.append(time.perf_counter() - t)
run.end()
print(json.dumps({"start": start, "end": time.time(), "latencies": latencies}))
"""


STEP_KEYS = ["loss_d", "d_real", "d_fake", "logit_real", "logit_fake", "loss_g", "g_grad_norm", "g_out_grad_norm",
             "d_loss_low"]  # a steps.csv's columns (the MLP GAN's)


def recorded_batches(epochs: int, rows_per_epoch: int) -> list[list[dict]]:
    """What a training's Tracking callback sends per epoch: its logged iterations' metrics (STEP_KEYS),
    in one call (requests of at most 1,000 values)."""
    return [[{"step": e * rows_per_epoch + s, "values": {f"step/{k}": 0.001 * (e + s + i) for i, k in enumerate(STEP_KEYS)}}
             for s in range(rows_per_epoch)] for e in range(epochs)]


def replay_round(backend: str, clients: int, epochs: int = 10, rows_per_epoch: int = 188) -> dict:
    """`clients` processes logging `epochs` batches each, as fast as the server answers. 188 rows: an
    epoch of the default MLP GAN (60,000 MNIST images, batch 64, an iteration logged every 5)."""
    with tracking_server(backend) as (base, server):
        password = server.add_user("trainer-a", "trainer")
        batches = recorded_batches(epochs, rows_per_epoch)
        env = {**os.environ, "GANLAB_REPO": str(REPO), "STUDY": "replay", "MLFLOW_TRACKING_URI": server.url,
               "MLFLOW_TRACKING_USERNAME": "trainer-a", "MLFLOW_TRACKING_PASSWORD": password, "OMP_NUM_THREADS": "1"}
        procs = [subprocess.Popen([sys.executable, "-c", REPLAY_CLIENT], env={**env, "RUN_NAME": f"c{i}"},
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(clients)]
        outputs = [p.communicate(json.dumps(batches), timeout=1800) for p in procs]
        failed = [err[-500:] for p, (_, err) in zip(procs, outputs) if p.returncode != 0]
        done = [json.loads(out.strip().splitlines()[-1]) for p, (out, _) in zip(procs, outputs) if p.returncode == 0]
        latencies = sorted(x for d in done for x in d["latencies"])
        span = max(d["end"] for d in done) - min(d["start"] for d in done) if done else float("nan")
        points = len(done) * sum(len(row["values"]) for batch in batches for row in batch)
        return {"backend": backend, "clients": clients, "failed": failed[:5],
                "server_log_errors": trouble(server.log_text(), SERVER_ERRORS)[:20],
                "points": points, "span_s": round(span, 1), "points_per_s": round(points / span, 0),
                "request_p50_s": round(latencies[len(latencies) // 2], 3) if latencies else None,
                "request_p95_s": round(latencies[int(len(latencies) * 0.95)], 3) if latencies else None,
                "request_max_s": round(latencies[-1], 3) if latencies else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machines", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    args = parser.parse_args()
    backends = [b for b in args.backends if not (b == "postgresql" and postgres_missing())]
    report = {"cpu": cpu_model(), "cores": os.cpu_count(), "commit": subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip(),
        "isolation": isolation_missing() or "mount namespaces", "machines": [], "replay": []}
    if "postgresql" in args.backends and postgres_missing():
        report["postgresql_skipped"] = postgres_missing()
    for count in args.machines:
        for backend in ["local", *backends]:
            report["machines"].append(machines_round(backend, count))
            print(json.dumps(report["machines"][-1])[:400], flush=True)
    if 8 in args.machines:
        for backend in backends:
            report["machines"].append(machines_round(backend, 8, auth_cache_s=0))
            print(json.dumps(report["machines"][-1])[:400], flush=True)
    for clients in args.clients:
        for backend in backends:
            report["replay"].append(replay_round(backend, clients))
            print(json.dumps(report["replay"][-1]), flush=True)
    OUT.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
