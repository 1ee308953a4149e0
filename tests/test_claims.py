"""Verdicts on the write-ups' claims: each side of each test, on small synthetic summaries."""
import pandas as pd

from pipeline.claims import CANNOT_TELL, CONSISTENT, FAIL, INCONSISTENT, PASS, difference, equivalent, interval_side
from pipeline.studies.acgan_classes import acgan_classes
from pipeline.studies.controls import controls
from pipeline.studies.generator_loss import generator_loss


def test_interval_side_needs_the_whole_interval_on_one_side():
    assert interval_side([0.91, 0.93, 0.92], low=0.8)[1] == CONSISTENT
    assert interval_side([0.21, 0.19, 0.20], low=0.8)[1] == INCONSISTENT
    assert interval_side([0.6, 0.95, 0.85], low=0.8)[1] == CANNOT_TELL  # mean above, interval across the line
    assert interval_side([0.95], low=0.8)[1] == CANNOT_TELL  # one seed: no interval
    assert interval_side([0.5, 0.52, 0.48], 0.3, 0.7)[1] == CONSISTENT
    assert interval_side([0.9, 0.92, 0.91], 0.3, 0.7)[1] == INCONSISTENT


def test_difference_takes_the_claimed_direction_into_account():
    high, low = [5.0, 5.1, 5.2], [4.0, 4.1, 3.9]
    assert difference(high, low, "higher")[1] == CONSISTENT
    assert difference(high, low, "lower")[1] == INCONSISTENT
    assert difference(low, high, "lower")[1] == CONSISTENT
    assert difference([4.0, 5.0, 4.5], [4.4, 4.6, 4.2], "higher")[1] == CANNOT_TELL


def test_barely_differs_needs_a_narrow_interval_not_just_a_large_p_value():
    assert equivalent([5.0, 5.05, 4.95], [5.02, 4.98, 5.0])[1] == CONSISTENT
    assert equivalent([7.0, 7.1, 6.9], [5.0, 5.1, 4.9])[1] == INCONSISTENT
    # no significant difference, but seeds too spread to say the difference is small
    verdict = equivalent([3.0, 7.0, 5.0], [4.0, 6.5, 5.5])[1]
    assert verdict == CANNOT_TELL


def _runs(rows, **common):
    return pd.DataFrame([{**common, **r} for r in rows])


def test_a_control_fails_when_one_seed_misses_either_threshold():
    good = _runs([{"seed": 0, "cond_acc": 0.95, "classes_covered": 10}, {"seed": 1, "cond_acc": 0.93, "classes_covered": 10}],
                 variant="standard acgan", data_label="mnist", confidence=0.9)
    (row,) = controls(good, pd.DataFrame())
    assert row.verdict == PASS and "seed 1: 0.930, 10 classes" in row.measured
    one_bad = good.assign(classes_covered=[10, 8])
    assert controls(one_bad, pd.DataFrame())[0].verdict == FAIL
    # an unconditional control is judged on the classifier's confidence, not conditional accuracy
    mlp = _runs([{"seed": 0, "confidence": 0.95}, {"seed": 1, "confidence": 0.85}],
                variant="standard mlp", data_label="mnist", cond_acc=float("nan"), classes_covered=10)
    (row,) = controls(mlp, pd.DataFrame())
    assert row.verdict == FAIL and "confidence >= 0.9" in row.claim


def _acgan_summary(acgan_5, cgan_5):
    rows = [{"model": "acgan", "loss": "minimax", "variant": "acgan/minimax", "cond_acc": a} for a in acgan_5]
    rows += [{"model": "cgan", "loss": "minimax", "variant": "cgan/minimax", "cond_acc": a} for a in cgan_5]
    return _runs(rows, num_classes=5)


def test_acgan_claims_judge_the_class_count_and_the_cgan_comparison():
    claims = {c.claim: c for c in acgan_classes(_acgan_summary([0.85, 0.9, 0.88], [0.97, 0.98, 0.99]), pd.DataFrame())}
    assert claims["5 classes: acgan/minimax draws the requested class"].verdict == CONSISTENT
    cgan = next(c for k, c in claims.items() if "cGAN" in k)
    assert cgan.verdict == CONSISTENT and cgan.measured.startswith("conditional accuracy cgan/minimax - acgan/minimax: 0.1")
    # 10 and 49 classes were not run: said, not guessed
    assert claims["10 classes: ACGAN draws the requested class for about half of the classes"].verdict == CANNOT_TELL
    assert claims["49 classes: ACGAN collapses (wrong glyphs, few modes)"].verdict == CANNOT_TELL


def test_acgan_at_chance_everywhere_is_no_verdict_on_the_write_up():
    claims = acgan_classes(_acgan_summary([0.2, 0.21, 0.19], [0.2, 0.2, 0.21]), pd.DataFrame())
    assert claims[0].verdict.startswith(CANNOT_TELL) and "no variant learned" in claims[0].verdict
    learned = acgan_classes(_acgan_summary([0.2, 0.21, 0.19], [0.9, 0.95, 0.92]), pd.DataFrame())
    assert learned[0].verdict == INCONSISTENT  # the cGAN learned: ACGAN's failure is a result


def test_acgan_claims_are_judged_per_set_of_networks_and_name_a_batch_blind_d():
    written = _acgan_summary([0.2, 0.21, 0.19], [0.2, 0.2, 0.21]).assign(nets="d_width=32")
    nobn = _acgan_summary([0.9, 0.92, 0.88], [0.6, 0.65, 0.62]).assign(nets="d_norm=none, d_width=32")
    nobn["variant"] += ", no BN in D"
    summary = pd.concat([written, nobn], ignore_index=True)
    summary["experiment"] = [f"run{i}" for i in range(len(summary))]
    steps = pd.DataFrame([{"experiment": e, "step": step, "d_real": 0.547 + (0.2 if "none" in nets else 0),
                           "d_fake": 0.547 - (0.2 if "none" in nets else 0)}
                          for e, nets in zip(summary["experiment"], summary["nets"]) for step in range(10)])
    claims = {c.claim: c for c in acgan_classes(summary, steps)}
    assert claims["5 classes: acgan/minimax draws the requested class"].verdict.startswith(CANNOT_TELL)
    assert claims["5 classes: acgan/minimax, no BN in D draws the requested class"].verdict == CONSISTENT
    cgan = claims["5 classes: a cGAN with the same networks draws the requested class more often than "
                  "acgan/minimax, no BN in D"]
    assert cgan.verdict == INCONSISTENT and "cgan/minimax, no BN in D - acgan/minimax, no BN in D" in cgan.measured
    blind = [c for c in claims.values() if "same for a real and a generated batch" in c.claim]
    assert [c.verdict for c in blind] == [CONSISTENT, INCONSISTENT]  # as written blind, without BN not


def test_vanishing_gradient_compares_losses_only_where_d_rejects_the_fakes():
    summary = _runs([{"experiment": f"{loss}_s{s}", "loss": loss, "seed": s}
                     for loss in ("minimax", "non_saturating") for s in range(3)],
                    model="dcgan", data_label="fmnist32", is_classifier=2.0)
    steps = []
    for row in summary.itertuples():
        for step in range(20):
            rejected = step < 10
            # while D rejects the fakes the saturating loss's gradient is tiny; afterwards both are alike
            norm = (0.01 if row.loss == "minimax" else 5.0) if rejected else 3.0
            steps.append({"experiment": row.experiment, "step": step, "d_fake": 0.02 if rejected else 0.4,
                          "g_grad_norm": norm * (1 + 0.1 * row.seed), "loss_g": 1.0 + 0.01 * step})
    claims = [c for c in generator_loss(summary, pd.DataFrame(steps)) if "vanishing gradient" in c.claim]
    assert len(claims) == 1 and claims[0].verdict == CONSISTENT
    # the same gradients when D does not reject the fakes: nothing to judge
    calm = pd.DataFrame(steps).assign(d_fake=0.4)
    claims = [c for c in generator_loss(summary, calm) if "vanishes" in c.claim]
    assert claims and claims[0].verdict == CANNOT_TELL


def test_class_count_claims_pick_runs_by_model_and_loss_not_by_their_variant_labels():
    """Labels are only shown: with the ACGAN and cGAN labels swapped, the same runs are judged the
    same way (the as-written claim still measures the acgan runs' 0.877)."""
    summary = _acgan_summary([0.85, 0.9, 0.88], [0.97, 0.98, 0.99])
    swapped = summary.assign(variant=summary["variant"].map({"acgan/minimax": "cgan/minimax",
                                                             "cgan/minimax": "acgan/minimax"}))
    original, relabelled = (acgan_classes(runs, pd.DataFrame()) for runs in (summary, swapped))
    assert [c.verdict for c in relabelled] == [c.verdict for c in original]
    assert [c.measured.split(": ")[-1] for c in relabelled] == [c.measured.split(": ")[-1] for c in original]
    written = relabelled[0]
    assert written.claim == "5 classes: cgan/minimax draws the requested class"  # the (wrong) label, shown as given
    assert written.measured.startswith("conditional accuracy 0.877") and written.verdict == CONSISTENT


def test_generator_loss_claims_do_not_read_variant_labels():
    summary = _runs([{"experiment": f"{loss}_s{s}", "loss": loss, "seed": s, "is_classifier": 2.0 + 0.01 * s + bonus,
                      "variant": f"dcgan/{loss}"}
                     for loss, bonus in (("minimax", 0.0), ("non_saturating", 0.02), ("hinge", 1.0)) for s in range(3)],
                    model="dcgan", data_label="fmnist32")
    renamed = summary.assign(variant=[f"run kind {i % 3}" for i in range(len(summary))])
    claims = generator_loss(summary, pd.DataFrame())
    assert len(claims) == 2 and [c.verdict for c in claims] == [CONSISTENT, CONSISTENT]
    assert generator_loss(renamed, pd.DataFrame()) == claims


def test_a_pretrained_acgan_is_not_counted_as_the_write_ups_acgan():
    """ACGAN minimax with class-head pre-training (studies/paper.yaml runs it beside the write-up's
    recipe, same networks) is another variant: it must not lift the as-written ACGAN's numbers."""
    summary = _acgan_summary([0.2, 0.21, 0.19], [0.9, 0.95, 0.92]).assign(pretrain_epochs=0)
    pretrained = _runs([{"model": "acgan", "loss": "minimax", "variant": "acgan/minimax+pretrain", "cond_acc": a,
                         "pretrain_epochs": 20} for a in (0.97, 0.98, 0.99)], num_classes=5)
    claims = {c.claim: c for c in acgan_classes(pd.concat([summary, pretrained], ignore_index=True), pd.DataFrame())}
    written = claims["5 classes: acgan/minimax draws the requested class"]
    assert written.measured.startswith("conditional accuracy 0.2") and written.verdict == INCONSISTENT
