"""The report's statistics: Welch comparisons and the G-loss spike score."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipeline.report.stats import MIN_SPIKE_ROWS, loss_spikes, welch


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
    from pipeline.evaluate.classifier import reliability
    from pipeline.report.tables import cell, measured_by_classifier

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
    assert measured_by_classifier("best_kid_classifier_heldout") and not measured_by_classifier("fid_effnet_heldout")
    assert not measured_by_classifier("is_effnet") and not measured_by_classifier("near_dup_rate")


def test_report_says_which_images_chose_the_best_checkpoint_and_flags_selection_on_the_evaluation_set():
    from pipeline.report.pages import selection_notes

    held_out = pd.DataFrame({"best_selected_by": ["classifier"] * 2, "best_reference": ["held-out"] * 2,
                             "best_fid_classifier": [30.0, 31.0]})
    (note,) = selection_notes(held_out)
    assert "`classifier` FID against the held-out images" in note and "optimistic" not in note
    same = pd.DataFrame({"best_selected_by": ["effnet"], "best_reference": ["training"], "best_fid_effnet": [270.0]})
    assert "optimistic" in selection_notes(same)[0]
    other = pd.DataFrame({"best_selected_by": ["effnet"], "best_reference": ["training"], "best_fid_classifier": [9.0]})
    assert "optimistic" not in selection_notes(other)[0]  # chosen with another extractor than the one reported
    # chosen on held-out images: the `_heldout` metrics of that extractor are the optimistic ones
    (note,) = selection_notes(held_out.assign(best_fid_classifier_heldout=[35.0, 36.0]))
    assert "`best_fid_classifier_heldout` optimistic" in note and "`best_fid_classifier`" not in note


def test_reproduce_command_globs_a_study_only_where_the_glob_matches_nothing_else():
    from types import SimpleNamespace

    from pipeline.report.pages import reproduction

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

    from pipeline.core.config import load_params, resolve_experiment

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

    from pipeline.core.config import load_params
    from pipeline.report.pages import collect

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
    from pipeline.core.config import load_params
    from pipeline.report.pages import write_report
    from pipeline.report.studies import GENERIC, STUDIES, report_for

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


def _page_table(page: str, heading: str) -> list[dict]:
    """The rows of the markdown table under `### heading` of a page, as {column: cell}."""
    lines = page.split(f"### {heading}\n", 1)[1].strip().splitlines()
    table = [line for line in lines[next(i for i, line in enumerate(lines) if line.startswith("|")):]]
    table = table[: next((i for i, line in enumerate(table) if not line.startswith("|")), len(table))]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table]
    return [dict(zip(cells[0], row)) for row in cells[2:]]


def _in_study(base, study: str, names: list[str], **updates):
    """params with `names` moved to a study of their own (no plug-in), other fields `updates`."""
    experiments = {n: {**base.experiments[n], "study": study} for n in names}
    return base.model_copy(update={"experiments": experiments, **updates})


def test_every_row_carries_its_mlflow_run_id_and_nets_or_says_why_not(tmp_path):
    """Provenance: a run trained without tracking (no run id in train.json) and one with no
    model_args get a cell saying so, in summary.csv and on the page, never an empty one."""
    import json

    import pandas as pd

    from pipeline.core.config import load_params
    from pipeline.report.pages import NOT_TRACKED, write_report

    names = ["mlp_mnist_minimax_s0", "dcgan_fmnist32_hinge_s0"]
    params = _in_study(load_params(), "provenance", names)
    for name in names:
        _fake_run(tmp_path / "runs", name, params=params)
    untracked = tmp_path / "runs" / "dcgan_fmnist32_hinge_s0"
    for file, key in (("train.json", "mlflow_run_id"), ("metrics.json", "train_run_id")):
        record = json.loads((untracked / file).read_text())
        del record[key]
        (untracked / file).write_text(json.dumps(record))
    write_report(params, tmp_path / "runs", tmp_path / "results")
    rows = pd.read_csv(tmp_path / "results" / "summary.csv").set_index("experiment")
    assert rows.loc["mlp_mnist_minimax_s0", "mlflow_run_id"] == "b"
    assert rows.loc["dcgan_fmnist32_hinge_s0", "mlflow_run_id"] == NOT_TRACKED
    assert rows.loc["mlp_mnist_minimax_s0", "nets"] == "none set: mlp's defaults"
    assert rows.loc["dcgan_fmnist32_hinge_s0", "nets"] == "ndf=16, ngf=16"
    page = {r["experiment"]: r for r in _page_table((tmp_path / "results" / "studies" / "provenance.md").read_text(),
                                                    "Every run")}
    assert page["mlp_mnist_minimax_s0"]["mlflow_run_id"] == "b"
    assert page["dcgan_fmnist32_hinge_s0"]["mlflow_run_id"] == NOT_TRACKED
    assert page["mlp_mnist_minimax_s0"]["nets"] == "none set: mlp's defaults"


def test_the_settings_table_shows_what_ran_not_what_the_study_text_says(tmp_path):
    """The study's free text claims 30 epochs, 3,750 updates, 3 seeds; the runs (profile smoke:
    the entries' 2 epochs scaled to 1) made 1 epoch of 4 G updates with 2 seeds: the table says so."""
    import json

    from pipeline.core.config import StudyConfig, load_params, resolve_experiment
    from pipeline.report.pages import write_report

    names = ["mlp_mnist_minimax_s0", "mlp_mnist_minimax_s1"]
    base = load_params()
    text = StudyConfig(question="?", at_this_scale="30 epochs (3,750 G updates) of 8,000 images, 3 seeds")
    params = _in_study(base, "settings", names, profile="smoke", studies={"settings": text})
    cfg = resolve_experiment(params, names[0])
    assert cfg.epochs == 1 != base.experiments[names[0]]["epochs"]
    for name in names:
        run = _fake_run(tmp_path / "runs", name, params=params)
        train = json.loads((run / "train.json").read_text())
        (run / "train.json").write_text(json.dumps({**train, "steps": 4}))
    write_report(params, tmp_path / "runs", tmp_path / "results")
    page = (tmp_path / "results" / "studies" / "settings.md").read_text()
    assert "30 epochs (3,750 G updates)" in page  # the free text is still printed, but not the source of numbers
    (row,) = _page_table(page, "Settings of these runs")
    assert row == {"variant": "mlp/minimax", "data": "mnist",
                   "model": "mlp", "loss": "minimax", "nets": "none set: mlp's defaults", "epochs": "1",
                   "G updates": "4", "batch size": str(cfg.batch_size), "training images": "100", "seeds": "0, 1",
                   "lr G / D": "0.0002 / 0.0002", "Adam betas G / D": "[0.5, 0.999] / [0.1, 0.999]",
                   "z": "100 x U(-1, 1)", "other settings": "d_step_inference_mode=True, precision=auto"}


def test_held_out_fid_sits_next_to_the_training_image_fid_and_a_run_without_holdout_says_so(tmp_path):
    """A run with `_heldout` metrics and one whose data has no holdout, on one page."""
    from pipeline.core.config import load_params
    from pipeline.report.pages import write_report

    names = ["mlp_mnist_minimax_s0", "mlp_mnist_minimax_s1"]
    params = _in_study(load_params(), "heldout", names)
    _fake_run(tmp_path / "runs", names[0], params=params, fid_classifier_heldout=55.0, kid_classifier_heldout=0.5,
              heldout="2,000 held-out images (holdout 0.2 of the prepared images), never trained on")
    _fake_run(tmp_path / "runs", names[1], params=params, heldout="none: dataset has no holdout (split test, holdout 0.0)")
    write_report(params, tmp_path / "runs", tmp_path / "results")
    page = (tmp_path / "results" / "studies" / "heldout.md").read_text()
    rows = _page_table(page, "Every run")
    columns = list(rows[0])
    assert columns[columns.index("fid_classifier") + 1] == "fid_classifier_heldout"
    assert [r["fid_classifier_heldout"] for r in rows] == ["55", "no holdout"]
    assert "`_heldout` metrics (FID / KID) against 2,000 held-out images" in page
    assert "no `_heldout` metrics: none: dataset has no holdout (split test, holdout 0.0)" in page


def test_kana_class_names_without_a_kana_font_are_labelled_by_their_readings_not_boxes(tmp_path, monkeypatch):
    """A fresh machine has no font with kana: the sample grid's row labels must still say which
    class each row is (and matplotlib must not warn of a missing glyph per label)."""
    import warnings

    import matplotlib.pyplot as plt

    from pipeline.data.official import SOURCES
    from pipeline.report import plots

    monkeypatch.setattr(plots, "_kana_font", lambda: None)
    kmnist = list(SOURCES["kmnist"].classes)
    assert plots.class_labels(kmnist) == ["o", "ki", "su", "tu", "na", "ha", "ma", "ya", "re", "wo"]
    assert plots.class_labels(["T-shirt/top", "7", "ゝ"]) == ["T-shirt/top", "7", "U+309D"]

    grid = tmp_path / "grid.png"
    plt.imsave(grid, np.zeros((2 + 10 * 30, 2 + 4 * 30)), cmap="gray")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plots.labelled_grid(grid, kmnist, tmp_path / "labelled.png", "kmnist samples")
    assert not [w for w in caught if "missing from font" in str(w.message)]
    assert (tmp_path / "labelled.png").stat().st_size > 0
