"""ACGAN class-count study: seed 000's claims on how ACGAN's conditional accuracy falls with the
number of classes, against a cGAN; its own per-class-count tables and plots replace the
comparison tables and the per-iteration curves."""
from __future__ import annotations

import pandas as pd

from pipeline.claims import CANNOT_TELL, INCONSISTENT, Claim, difference, interval_side
from pipeline.studies.base import StudyReport

WORKS = 0.8          # conditional accuracy read as "draws the requested class"
HALF = (0.3, 0.7)    # ... read as "about half of the classes work"
LEARNED = 2.0        # no variant above this multiple of chance: the runs were too short to judge ACGAN
BLIND = 0.01         # |mean D(real) - D(fake)| below this: D does not separate real from generated batches


def acgan_classes(summary: pd.DataFrame, steps: pd.DataFrame) -> list[Claim]:
    """Seed 000: ACGAN draws the requested class with 5 classes, about half of them with 10, and
    collapses with 49; a cGAN with the same networks does better. Judged once per set of networks
    (`nets`, the runs' model_args): the write-up's, and any other the study ran beside them."""
    rows = []
    nets_sets = summary.groupby("nets", sort=False) if "nets" in summary else [("", summary)]
    for _, runs in nets_sets:
        rows += _class_count_claims(runs)
    if 49 not in set(summary["num_classes"]):
        rows.append(Claim("000", "49 classes: ACGAN collapses (wrong glyphs, few modes)",
                          "not run at this scale (Kuzushiji-49 is not embedded)", "-", CANNOT_TELL))
    rows += _batch_blind_discriminator(summary, steps)
    return rows


def _class_count_claims(runs: pd.DataFrame) -> list[Claim]:
    """The class-count claims for runs that share one set of networks."""
    rows = []

    def values(n: int, model: str, loss: str | None = None) -> pd.DataFrame:
        """The write-up's recipe: no class-head pre-training (a variant of its own where a study runs it)."""
        pretrained = runs["pretrain_epochs"] > 0 if "pretrain_epochs" in runs else False
        chosen = (runs["num_classes"] == n) & (runs["model"] == model) & ~pretrained
        if loss:
            chosen &= runs["loss"] == loss
        return runs[chosen]

    ns = sorted(runs["num_classes"].unique())
    as_written = {n: values(n, "acgan", "minimax") for n in (*ns, 5, 10)}
    for n, (band, words) in {5: ((WORKS, 1.0), "draws the requested class"),
                             10: (HALF, "draws the requested class for about half of the classes")}.items():
        written = as_written[n]
        if written.empty:
            if n not in ns:
                rows.append(Claim("000", f"{n} classes: ACGAN {words}", "not run at this scale", "-", CANNOT_TELL))
            continue
        measured, verdict = interval_side(written["cond_acc"], *band)
        best = runs[runs["num_classes"] == n].groupby("variant")["cond_acc"].mean().max()
        if verdict == INCONSISTENT and best < LEARNED * (1 / n):
            verdict = f"{CANNOT_TELL} (no variant learned its labels: best mean {best:.2f})"
        rows.append(Claim("000", f"{n} classes: {written['variant'].iloc[0]} {words}",
                          f"conditional accuracy {measured} (chance {1 / n:.2f})",
                          f"95% interval of the mean within [{band[0]}, {band[1]}]", verdict))
    for n in ns:
        written = as_written[n]
        for other, claim, source in (
                (values(n, "cgan"), "a cGAN with the same networks draws the requested class more often than", "000"),
                (values(n, "acgan", "non_saturating"), "with the non-saturating G loss, ACGAN draws the requested "
                                                       "class more often than", "ours")):
            if len(other) and len(written):
                measured, verdict = difference(other["cond_acc"], written["cond_acc"], "higher")
                rows.append(Claim(source, f"{n} classes: {claim} {written['variant'].iloc[0]}",
                                  f"conditional accuracy {other['variant'].iloc[0]} - {written['variant'].iloc[0]}: "
                                  f"{measured}", "Welch 95% interval above 0", verdict))
    return rows


def _batch_blind_discriminator(summary: pd.DataFrame, steps: pd.DataFrame) -> list[Claim]:
    """Ours: with BatchNorm closing D's last hidden layer and the real and the generated batch
    passed to D separately, every batch's mean adversarial logit is the same (BN's shift through
    the last linear layer), so D cannot tell a real batch from a generated one. Per run: mean
    D(real) - D(fake) over its last tenth of logged iterations, per set of networks."""
    if steps.empty or "d_real" not in steps or "nets" not in summary:
        return []
    last = steps[steps["step"] >= 0.9 * steps.groupby("experiment")["step"].transform("max")]
    gap = (last["d_real"] - last["d_fake"]).groupby(last["experiment"]).mean()
    rows = []
    for nets, runs in summary.groupby("nets", sort=False):
        measured, verdict = interval_side(gap.reindex(runs["experiment"]).dropna(), -BLIND, BLIND)
        variants = "; ".join(sorted(runs["variant"].unique()))
        rows.append(Claim("ours", f"{variants}: D's mean output is the same for a real and a generated batch",
                          f"mean D(real) - D(fake), last tenth of training: {measured} ({len(runs)} runs)",
                          f"95% interval within +-{BLIND}", verdict))
    return rows


REPORT = StudyReport(claims=acgan_classes, by=None, iteration_plots=False)
