"""tools/run_lanes.py: runs' stages run two at a time in git worktrees sharing the DVC cache, their
dvc.lock entries and outputs landing in the workspace (docs/operations.md, "A sweep on one machine")."""
import json
import shutil
import sqlite3

import yaml

from pipeline.core.cores import usable_cores
from tests.conftest import REPO_ROOT
from tests.dvc_repo import DVC, down_scaled_default, git_env, sh, study_repo

EXPERIMENTS = ["mlp_mnist_minimax_s0", "mlp_mnist_minimax_s1", "mlp_mnist_non_saturating_s0"]


def test_two_lanes_run_the_stages_at_once_and_the_workspace_gets_every_output(tmp_path):
    params = down_scaled_default()
    params["experiments"] = {name: params["experiments"][name] for name in EXPERIMENTS[:2]}
    params["datasets"] = {"mnist": params["datasets"]["mnist"]}
    repo = study_repo(tmp_path, params)
    (repo / "tools").mkdir()
    shutil.copy(REPO_ROOT / "tools" / "run_lanes.py", repo / "tools")
    # an experiment added since the last commit: a lane must run the workspace as it is, not HEAD
    params["experiments"][EXPERIMENTS[2]] = down_scaled_default()["experiments"][EXPERIMENTS[2]]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    phases = tmp_path / "phases.jsonl"
    env = git_env(HOME=str(tmp_path / "home"), GANLAB_PHASES=str(phases))
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("OMP_NUM_THREADS", None)  # the test runner's share; the lanes take theirs

    out = sh(["python", "tools/run_lanes.py", "--lanes", "2", "evaluate@*"], repo, env)
    lines = [json.loads(line) for line in phases.read_text().splitlines()]
    where = {(line["stage"], line["cwd"]) for line in lines}
    # the stages both lanes need ran once, here; each run's stages once, in a lane
    assert {cwd for stage, cwd in where if stage.startswith(("prepare@", "classifier@"))} == {str(repo)}
    assert sorted(s for s, _ in where if s.startswith("prepare@") or s.startswith("classifier@")) == \
        ["classifier@mnist", "prepare@mnist"]
    trained = sorted(stage for stage, cwd in where if stage.startswith("train@"))
    assert trained == sorted(f"train@{name}" for name in EXPERIMENTS)
    lanes = {cwd for stage, cwd in where if stage.startswith("train@")}
    assert lanes == {str(repo / ".dvc/tmp/lanes/lane0"), str(repo / ".dvc/tmp/lanes/lane1")}
    # at the same time: some stage of one lane ran while a stage of the other did
    spans = {lane: [(l["end"] - l["process"], l["end"]) for l in lines if l["cwd"] == lane] for lane in lanes}
    first, second = spans.values()
    assert any(a0 < b1 and b0 < a1 for a0, a1 in first for b0, b1 in second), spans
    assert "[lane0] Running stage" in out and "[lane1] Running stage" in out
    # each lane a fixed share of the cores, whatever the other is doing: the same bytes every time
    assert f"in 2 lanes of {max(1, usable_cores()[0] // 2)} torch thread(s)" in out
    # the lanes' stage processes were forked from the stage server (stages/_server.py)
    assert all(l["forked"] for l in lines if l["cwd"] in lanes), lines

    # the workspace has every output (restored, not re-run), the lanes are gone, the runs are in its store
    assert not any(l["cwd"] == str(repo) and l["stage"].startswith(("train@", "evaluate@")) for l in lines)
    for name in EXPERIMENTS:
        assert json.loads((repo / "runs" / name / "metrics.json").read_text())["epochs"] >= 1
    status = json.loads(sh(DVC + ["status", "--json", *(f"evaluate@{n}" for n in EXPERIMENTS)], repo, env))
    assert set(status) <= {"sources"}, status
    assert ".dvc/tmp/lanes" not in sh(["git", "worktree", "list"], repo, env)
    with sqlite3.connect(repo / "mlflow.db") as db:
        finished = sorted(name for name, in db.execute("SELECT name FROM runs WHERE status = 'FINISHED'"))
    assert finished == sorted(EXPERIMENTS)

    again = sh(["python", "tools/run_lanes.py", "evaluate@*"], repo, env)
    assert "every matching stage is up to date" in again and "[lane" not in again
