"""The report's statistics: Welch comparisons and the G-loss spike score."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipeline.stats import MIN_SPIKE_ROWS, loss_spikes, welch


def test_welch_matches_scipys_unequal_variance_test_and_a_hand_computed_interval():
    a, b = [1.0, 2.0, 4.0], [0.0, 0.5, 0.7, 0.2]
    diff, lo, hi, p = welch(a, b)
    assert diff == pytest.approx(np.mean(a) - np.mean(b))
    assert p == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    va, vb = np.var(a, ddof=1) / 3, np.var(b, ddof=1) / 4
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 3)  # Welch-Satterthwaite
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert (lo, hi) == pytest.approx((diff - half, diff + half))


def test_welch_has_no_interval_with_one_seed():
    diff, lo, hi, p = welch([1.0], [0.0, 1.0])
    assert diff == 0.5 and math.isnan(lo) and math.isnan(hi) and math.isnan(p)


def test_spike_score_separates_a_spiky_run_from_a_steady_one_and_skips_short_runs():
    rng = np.random.default_rng(0)
    steady = 1.0 + 0.01 * rng.standard_normal(50)
    spiky = steady.copy()
    spiky[25] = 5.0  # one jump of 4 where the typical deviation is ~0.007
    rows = [{"experiment": name, "loss_g": v} for name, series in (("steady", steady), ("spiky", spiky))
            for v in series]
    rows += [{"experiment": "short", "loss_g": v} for v in (1.0, 9.0, 1.1)[: MIN_SPIKE_ROWS - 1]]
    scores = loss_spikes(pd.DataFrame(rows))
    assert scores["spiky"] > 100 and scores["steady"] < 10
    assert math.isnan(scores["short"])


def test_metrics_from_a_classifier_below_its_floor_are_marked_unreliable():
    from pipeline.classifier import reliability
    from pipeline.report_tables import cell, measured_by_classifier

    assert reliability(0.96, 0.97, 10) == {"floor": 0.97, "reliable": False}
    assert reliability(0.97, 0.97, 10)["reliable"]
    # no floor of its own (an image folder): halfway from chance to perfect; a classifier at chance is flagged
    assert reliability(0.10, None, 10) == {"floor": 0.55, "reliable": False}
    assert reliability(0.70, None, 9)["reliable"] and not reliability(0.70, None, 2)["reliable"]
    runs = pd.DataFrame({"cond_acc": [0.5, 0.7], "fid_effnet": [10.0, 12.0], "classifier_reliable": [True, False]})
    assert cell(runs, "cond_acc").endswith("(unreliable: classifier below its floor)")
    assert "unreliable" not in cell(runs, "fid_effnet")  # not measured with the classifier
    assert "unreliable" not in cell(runs.iloc[:1], "cond_acc")
    assert measured_by_classifier("best_fid_classifier") and measured_by_classifier("classes_covered")
    assert not measured_by_classifier("is_effnet") and not measured_by_classifier("near_dup_rate")


def test_report_says_which_images_chose_the_best_checkpoint_and_flags_selection_on_the_evaluation_set():
    from pipeline.report import selection_notes

    held_out = pd.DataFrame({"best_selected_by": ["classifier"] * 2, "best_reference": ["held-out"] * 2,
                             "best_fid_classifier": [30.0, 31.0]})
    (note,) = selection_notes(held_out)
    assert "`classifier` FID against the held-out images" in note and "optimistic" not in note
    same = pd.DataFrame({"best_selected_by": ["effnet"], "best_reference": ["training"], "best_fid_effnet": [270.0]})
    assert "optimistic" in selection_notes(same)[0]
    other = pd.DataFrame({"best_selected_by": ["effnet"], "best_reference": ["training"], "best_fid_classifier": [9.0]})
    assert "optimistic" not in selection_notes(other)[0]  # chosen with another extractor than the one reported


def test_reproduce_command_globs_a_study_only_where_the_glob_matches_nothing_else():
    from types import SimpleNamespace

    from pipeline.report import reproduction

    def runs(names):
        return pd.DataFrame({"experiment": names})

    params = SimpleNamespace(profile="cpu", experiments=dict.fromkeys(
        ["control_a_s0", "control_b_s0", "acgan_k5_s0", "acgan_ns_k5_s0", "cgan_k5_s0", "acgan_icons_s0"]))
    controls = ["control_a_s0", "control_b_s0"]
    # one of them evaluated so far: the command still covers the study, not what happens to be done
    assert "`dvc repro --glob 'evaluate@control_*'`" in reproduction(runs(controls[:1]), params, controls)
    # acgan_* would also run acgan_icons_s0 of another study: the stages are named one by one
    acgan = ["acgan_k5_s0", "acgan_ns_k5_s0", "cgan_k5_s0"]
    text = reproduction(runs(acgan), params, acgan)
    assert "`dvc repro evaluate@acgan_k5_s0 evaluate@acgan_ns_k5_s0 evaluate@cgan_k5_s0`" in text and "glob" not in text


def _fake_run(root, name, *, train=True, evaluated=True, epochs=None, params=None, **metrics):
    """The files a trained and evaluated run leaves (trained as params.yaml, or `params`, says,
    unless `epochs`), with made-up numbers (`metrics` replace some)."""
    import json

    from pipeline.config import load_params, resolve_experiment

    cfg = resolve_experiment(params or load_params(), name)
    run = root / name
    (run / "samples").mkdir(parents=True)
    if train:
        (run / "train.json").write_text(json.dumps({"train_time_s": 10.0, "wall_time_s": 12.0, "mlflow_run_id": "b",
                                                    "epochs": epochs or cfg.epochs, "fingerprint": cfg.fingerprint(),
                                                    "num_train_images": 100}))
        (run / "history.csv").write_text("epoch,step,fid_cheap\n1,10,50.0\n")
        (run / "steps.csv").write_text("step\n")
        (run / "classes.json").write_text(json.dumps({"classes": [str(i) for i in range(10)]}))
    if evaluated:
        (run / "metrics.json").write_text(json.dumps({"fid_classifier": 40.0, "is_classifier": 2.0, "n_fake": 10,
                                                      "n_real": 10, "evaluate_time_s": 1.0, "train_run_id": "b",
                                                      **metrics}))
    return run


def test_the_report_leaves_out_runs_it_cannot_read_whole_and_says_why(tmp_path):
    """A re-train that failed (DVC removed its outputs, its old metrics.json stayed) or one not
    evaluated since: listed with the reason, not a crash and not stale numbers."""
    import json

    from pipeline.config import load_params
    from pipeline.report import collect

    params = load_params()
    _fake_run(tmp_path, "mlp_mnist_minimax_s0")
    _fake_run(tmp_path, "mlp_mnist_minimax_s1", train=False)          # the failed re-train
    stale = _fake_run(tmp_path, "mlp_mnist_non_saturating_s0")
    newer = {**json.loads((stale / "train.json").read_text()), "mlflow_run_id": "c"}
    (stale / "train.json").write_text(json.dumps(newer))  # a newer training, same settings
    _fake_run(tmp_path, "mlp_mnist_non_saturating_s1", epochs=1)  # params.yaml changed since: 2 epochs
    summary = collect(params, tmp_path)["summary"]
    assert list(summary["experiment"]) == ["mlp_mnist_minimax_s0"]
    missing = summary.attrs["missing"]
    assert "mlp_mnist_minimax_s1 (training outputs missing: its last training failed or was interrupted)" in missing
    assert "mlp_mnist_non_saturating_s0 (re-trained since its evaluation: run its evaluate stage)" in missing
    assert "dcgan_fmnist32_hinge_s0 (not evaluated)" in missing
    assert ("mlp_mnist_non_saturating_s1 (trained with other settings than params.yaml's: run its train and "
            "evaluate stages)") in missing


def test_a_study_without_a_plug_in_gets_the_generic_tables_and_plots(tmp_path):
    """A study the report has never heard of: every generic section and plot, no claims section."""
    from pipeline.config import load_params
    from pipeline.report import write_report
    from pipeline.studies import GENERIC, STUDIES, report_for

    base = load_params()
    names = ["mlp_mnist_minimax_s0", "mlp_mnist_minimax_s1", "mlp_mnist_non_saturating_s0",
             "mlp_mnist_non_saturating_s1"]
    params = base.model_copy(update={"experiments": {n: {**base.experiments[n], "study": "new_study"} for n in names}})
    assert "new_study" not in STUDIES and report_for("new_study") is GENERIC
    for i, name in enumerate(names):
        _fake_run(tmp_path / "runs", name, params=params, fid_classifier=40.0 + i, is_classifier=2.0 + i / 10)
    write_report(params, tmp_path / "runs", tmp_path / "results")
    page = (tmp_path / "results" / "studies" / "new_study.md").read_text()
    for section in ("### Every run", "### Per variant (mean [95% t-interval] over seeds)",
                    "### Pairwise differences of is_classifier by variant",
                    "### Pairwise differences of fid_classifier by variant"):
        assert section in page
    assert "claims beside ours" not in page and "Controls" not in page
    assert "| mlp/minimax - mlp/non_saturating |" in page  # the pairwise table has its row
    plots = {p.name for p in (tmp_path / "results" / "plots").glob("*.png")}
    assert {"new_study_fid_cheap_vs_epoch.png", "new_study_fid_classifier_by_loss.png",
            "new_study_is_classifier_by_loss.png"} <= plots
    assert "## Study `new_study`" in (tmp_path / "results" / "report.md").read_text()
