"""A sweep declared in params expands reproducibly into ordinary experiments, the same draws for
every loss; a bad search space or a stale expansion is a clear error before any work."""
import copy
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.core.config import load_params, resolve_experiment, sweep_experiments
from pipeline.core.errors import ConfigError
from pipeline.core.sweeps import SweepConfig, draws
from tests.conftest import REPO_ROOT
from tests.test_config import VALID

SWEEP = {
    "base": {"study": "sweep", "model": "mlp", "dataset": "fmnist", "epochs": 1, "seed": 0},
    "losses": ["minimax", "non_saturating", "hinge"],
    "draws": 4,
    "seed": 3,
    "space": {"lr": {"log_uniform": [1e-5, 1e-2]}, "beta1": {"uniform": [0.0, 0.9]},
              "n_critic": {"int_uniform": [1, 5]}, "batch_size": {"choice": [16, 32]}},
}
COMMENT = "# the user's own comment, kept\n"


def params_file(tmp_path, sweep=SWEEP) -> Path:
    params = copy.deepcopy(VALID)
    params["sweeps"] = {"s": sweep}
    experiments = params.pop("experiments")
    text = COMMENT + yaml.safe_dump(params, sort_keys=False) + yaml.safe_dump({"experiments": experiments}, sort_keys=False)
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def expand_file(path, check=True):
    return subprocess.run([sys.executable, str(REPO_ROOT / "tools/expand_sweeps.py"), str(path)],
                          capture_output=True, text=True, check=check)


def test_every_loss_gets_the_same_draws_and_every_machine_the_same_expansion():
    sweep = SweepConfig(**SWEEP)
    entries = sweep_experiments("s", sweep, {})
    assert len(entries) == 3 * 4
    for i in range(4):
        same_draw = [e for e in entries.values() if e["draw"] == i]
        assert {e["loss"] for e in same_draw} == {"minimax", "non_saturating", "hinge"}
        sampled = [{k: e[k] for k in ("lr_g", "lr_d", "betas_g", "betas_d", "n_critic", "batch_size")} for e in same_draw]
        assert all(s == sampled[0] for s in sampled)  # the loss does not change the setting
        assert sampled[0]["lr_g"] == sampled[0]["lr_d"] and sampled[0]["betas_g"] == sampled[0]["betas_d"]
    assert len({e["lr_g"] for e in entries.values()}) == 4  # four different draws
    # Python's Mersenne Twister: the same numbers on every machine and version (pinned here)
    assert entries["s_hinge_d00"]["lr_g"] == pytest.approx(draws(sweep)[0]["lr"])
    assert draws(sweep) == draws(SweepConfig(**SWEEP))
    assert draws(sweep)[0] == {"batch_size": 16, "beta1": 0.533377, "lr": 2.46189e-05, "n_critic": 5}


def test_a_drawn_beta1_keeps_the_beta2_that_defaults_give():
    sweep = SweepConfig(**SWEEP)
    entries = sweep_experiments("s", sweep, {"betas_g": [0.5, 0.99]})
    beta1 = draws(sweep)[0]["beta1"]
    assert entries["s_hinge_d00"]["betas_g"] == [beta1, 0.99]  # params.yaml's defaults
    assert entries["s_hinge_d00"]["betas_d"] == [beta1, 0.999]  # ExperimentConfig's, where defaults say nothing


def test_a_sweep_may_not_search_what_it_sets_itself():
    with pytest.raises(ValueError, match="space: searches `loss`"):
        SweepConfig(**{**SWEEP, "space": {"loss": {"choice": ["hinge"]}}})


def test_distributions_stay_in_their_bounds_and_log_uniform_spans_the_decades():
    sweep = SweepConfig(**{**SWEEP, "draws": 400})
    settings = draws(sweep)
    lrs = [s["lr"] for s in settings]
    assert 1e-5 <= min(lrs) < 1e-4 and 1e-3 < max(lrs) <= 1e-2
    decades = [sum(10 ** k <= v < 10 ** (k + 1) for v in lrs) for k in (-5, -4, -3)]
    assert all(70 < n < 200 for n in decades), decades  # about a third per decade, not piled at the top
    assert all(0.0 <= s["beta1"] <= 0.9 for s in settings)
    assert {s["n_critic"] for s in settings} == {1, 2, 3, 4, 5} and {s["batch_size"] for s in settings} == {16, 32}
    assert not any(math.isnan(v) for v in lrs)


def test_the_tool_writes_ordinary_experiments_and_keeps_the_rest_of_the_file(tmp_path):
    path = params_file(tmp_path)
    out = expand_file(path)
    assert "1 sweep(s), 12 experiments written" in out.stdout
    text = path.read_text()
    assert text.startswith(COMMENT)
    params = load_params(path)
    assert {"e1", "e2"} <= set(params.experiments) and len(params.experiments) == 14
    cfg = resolve_experiment(params, "s_minimax_d01")
    assert (cfg.sweep, cfg.draw, cfg.loss, cfg.model) == ("s", 1, "minimax", "mlp")
    assert cfg.betas_g[1] == 0.5 or cfg.betas_g[1] == 0.999  # beta2 untouched: only beta1 was searched
    expand_file(path)
    assert path.read_text() == text  # idempotent


def test_an_edited_sweep_must_be_expanded_again_before_any_work(tmp_path):
    path = params_file(tmp_path)
    expand_file(path)
    path.write_text(path.read_text().replace("draws: 4", "draws: 5"))
    with pytest.raises(ConfigError, match=r"sweeps\.s are not its expansion .*run `python tools/expand_sweeps.py"):
        load_params(path)
    expand_file(path)
    assert len(load_params(path).experiments) == 2 + 15


@pytest.mark.parametrize("space,message", [
    ({"lr_gg": {"uniform": [0.1, 0.2]}}, r"sweeps\.s\.space: unknown experiment key 'lr_gg' \(did you mean 'lr_g'"),
    ({"lr": {"log_uniform": [0.0, 0.1]}}, r"sweeps\.s\.space\.lr.*log_uniform: low 0\.0 must be above 0"),
    ({"lr": {"uniform": [0.2, 0.1]}}, r"sweeps\.s\.space\.lr.*low 0\.2 must be below high 0\.1"),
    ({"lr": {"uniform": [0.1, 0.2], "choice": [1]}}, r"sweeps\.s\.space\.lr.*exactly one of .*got uniform, choice"),
])
def test_a_bad_search_space_is_one_clear_error_and_the_file_is_left_alone(tmp_path, space, message):
    path = params_file(tmp_path, {**SWEEP, "space": space})
    before = path.read_text()
    result = expand_file(path, check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3
    assert re.search(message, result.stderr), result.stderr
    assert path.read_text() == before
    with pytest.raises(ConfigError, match=message):
        load_params(path)


def test_a_drawn_value_the_experiment_cannot_take_is_refused_with_its_key_path(tmp_path):
    path = params_file(tmp_path, {**SWEEP, "space": {"batch_size": {"choice": [1]}}})
    result = expand_file(path, check=False)
    assert result.returncode != 0 and "experiments.s_minimax_d00.batch_size" in result.stderr, result.stderr


def test_a_sweeps_mlflow_run_is_tagged_with_the_sweep_and_draw_and_logs_the_drawn_values(tmp_path):
    from pipeline.tracking.training import run_identity

    path = params_file(tmp_path)
    expand_file(path)
    params = load_params(path)
    cfg = resolve_experiment(params, "s_hinge_d02")
    meta = {"source": "fashion_mnist", "content_hash": "0" * 64}
    tags, logged = run_identity(params, "s_hinge_d02", cfg, meta)
    assert (tags["sweep"], tags["draw"]) == ("s", "2")
    drawn = draws(SweepConfig(**SWEEP))[2]
    assert logged["lr_g"] == logged["lr_d"] == drawn["lr"] and logged["n_critic"] == drawn["n_critic"]
    assert logged["betas_g"][0] == drawn["beta1"] and logged["batch_size"] == drawn["batch_size"]
    untagged, _ = run_identity(params, "e1", resolve_experiment(params, "e1"), meta)
    assert "sweep" not in untagged
