"""The loss-budget page's numbers (pipeline.report.studies.loss_budget) on made-up sweeps: the
curves' shape, diverged draws, shared orderings, and the verdict's three answers."""
import math

import numpy as np
import pandas as pd
import pytest

from pipeline.report.stats import DATA
from pipeline.report.studies import report_for
from pipeline.report.studies.loss_budget import budget_curves, budget_section, draw_table, seed_spread, verdict

FID = "fid_classifier"


def sweep(fids: dict[str, list[float]], name: str = "s", model: str = "mlp", data: str = "mnist") -> pd.DataFrame:
    rows = [{"sweep": name, "loss": loss, "draw": i, FID: fid, "variant": f"{model}/{loss}", "model": model, DATA: data,
             "lr": f"{1e-4 * (i + 1):g} / {1e-4 * (i + 1):g}", "betas": "0.5, 0.999 / 0.5, 0.999",
             "batch_size": 64, "n_critic": 1}
            for loss, values in fids.items() for i, fid in enumerate(values)]
    return pd.DataFrame(rows)


def test_the_lowest_fid_so_far_only_falls_and_ends_at_the_best_draw():
    rng = np.random.default_rng(1)
    values = list(rng.uniform(10, 100, 16))
    curves = budget_curves(sweep({"hinge": values}), FID)
    for column in ("median", "low", "high"):
        assert (np.diff(curves[column]) <= 0).all()
    last = curves.iloc[-1]
    assert last["low"] == last["median"] == last["high"] == min(values)  # every ordering holds every draw
    first = curves.iloc[0]
    assert first["median"] == pytest.approx(np.median(values), rel=0.15)  # one draw: any of them
    assert first["high"] > np.percentile(values, 80) and first["low"] < np.percentile(values, 20)


def test_losses_share_the_orderings_of_their_common_draws():
    values = [30.0, 10.0, 50.0, 20.0, 40.0]
    curves = budget_curves(sweep({"hinge": values, "minimax": values}), FID)
    a, b = (curves[curves["loss"] == loss][["median", "low", "high"]].to_numpy() for loss in ("hinge", "minimax"))
    assert (a == b).all()  # independent orderings would give (slightly) different bands


def test_a_diverged_draw_never_counts_and_its_share_is_reported():
    runs = sweep({"hinge": [math.nan, 20.0, math.nan, 40.0], "wgan_gp": [math.nan] * 4})
    curves = budget_curves(runs, FID)
    assert curves[curves["loss"] == "hinge"]["median"].iloc[-1] == 20.0
    assert np.isinf(curves[curves["loss"] == "wgan_gp"]["median"]).all()
    table = draw_table(runs, FID).set_index("loss")
    assert table.loc["hinge", "diverged"] == 0.5 and table.loc["wgan_gp", "diverged"] == 1.0
    assert table.loc["hinge", "best draw"] == 1 and table.loc["hinge", "lr"] == "0.0002 / 0.0002"
    assert table.loc["wgan_gp", "best draw"] == "none trained"


def test_one_loss_far_below_the_others_is_lower_at_every_budget():
    rng = np.random.default_rng(2)
    runs = sweep({"hinge": list(rng.uniform(10, 12, 8)), "minimax": list(rng.uniform(40, 60, 8))})
    answer = verdict(budget_curves(runs, FID), spread=1.0)
    assert answer.startswith("hinge is lower at every budget"), answer


def test_losses_whose_best_draws_are_within_seed_noise_meet():
    rng = np.random.default_rng(3)
    runs = sweep({"hinge": list(rng.uniform(10, 60, 8)), "minimax": list(rng.uniform(10, 60, 8))})
    curves = budget_curves(runs, FID)
    full = curves[curves["draws"] == 8].set_index("loss")["median"]
    gap = abs(full["hinge"] - full["minimax"])
    assert verdict(curves, spread=gap).startswith("the curves meet")
    assert "cannot be told" in verdict(curves, spread=None)
    beyond_noise = verdict(curves, spread=gap / 10)  # the same gap, now 5 seed sd: no longer "meet"
    assert "is lowest with all draws" in beyond_noise and "but not at every budget" in beyond_noise, beyond_noise


def test_seed_spread_is_pooled_over_the_fixed_settings_with_two_or_more_seeds():
    fixed = pd.DataFrame({"variant": ["a", "a", "a", "b", "b", "c"], "loss": ["h"] * 6,
                          FID: [10.0, 12.0, 14.0, 20.0, 22.0, 99.0]})
    assert seed_spread(fixed, FID) == pytest.approx(math.sqrt((2 * 4.0 + 1 * 2.0) / 3))
    assert seed_spread(fixed[fixed["variant"] == "c"], FID) is None


def test_the_study_page_has_the_curves_verdict_table_and_plot(tmp_path):
    rng = np.random.default_rng(4)
    runs = sweep({"hinge": list(rng.uniform(10, 20, 6)), "non_saturating": list(rng.uniform(30, 40, 6))})
    fixed = sweep({"non_saturating": [35.0, 36.0, 34.0]}).assign(sweep=None, draw=None)
    sections, plots = report_for("loss_budget").extra("loss_budget", pd.concat([runs, fixed]), {}, tmp_path)
    text = "\n".join(sections)
    assert "hinge is lower at every budget" in text and "Lucic et al." in text
    assert "| s | hinge | 6 |" in text
    assert [p.name for p in plots] == ["loss_budget_s_budget.png"] and plots[0].stat().st_size > 1000
    assert budget_section("x", fixed, {}, tmp_path)[0][0].startswith("## Budget curves\n\nNo sweep runs")


def test_each_sweep_is_judged_against_the_seed_spread_of_its_own_nets_and_data(tmp_path):
    """Two sweeps whose FIDs live on different scales: a fixed DCGAN setting whose seeds spread by ~10
    must not make the MLP sweep's gap of 3 look like noise, nor the MLP's tight seeds the DCGAN's."""
    mlp = sweep({"hinge": [10.0, 11.0, 12.0], "non_saturating": [13.0, 14.0, 15.0]}, name="mlp_s")
    dcgan = sweep({"hinge": [100.0, 104.0, 108.0], "non_saturating": [103.0, 105.0, 109.0]},
                  name="dcgan_s", model="dcgan", data="fmnist32")
    fixed = pd.concat([sweep({"non_saturating": [20.0, 20.2, 19.8]}).assign(sweep=None, draw=None),
                       sweep({"non_saturating": [90.0, 100.0, 110.0]}, model="dcgan", data="fmnist32")
                       .assign(sweep=None, draw=None)])
    text = "\n".join(budget_section("loss_budget", pd.concat([mlp, dcgan, fixed]), {}, tmp_path)[0])
    mlp_line = next(line for line in text.splitlines() if line.startswith("* **mlp_s**"))
    dcgan_line = next(line for line in text.splitlines() if line.startswith("* **dcgan_s**"))
    assert "two seed standard deviations are 0.4" in mlp_line and "meet" not in mlp_line
    assert "the curves meet" in dcgan_line and "(20)" in dcgan_line
    assert "dcgan_s 10; mlp_s 0.2" in text
