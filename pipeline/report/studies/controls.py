"""Positive controls (issue 13): known-good configurations that show the pipeline can see the
effects the other studies look for; each seed must pass."""
from __future__ import annotations

import pandas as pd

from pipeline.report.claims import FAIL, PASS, Claim
from pipeline.report.stats import DATA
from pipeline.report.studies.base import StudyReport

CONTROL_ACC, CONTROL_CONFIDENCE, CONTROL_CLASSES = 0.9, 0.9, 9  # issue 13's positive controls


def controls(summary: pd.DataFrame, steps: pd.DataFrame, per_class: pd.DataFrame | None = None) -> list[Claim]:
    """Positive controls: every seed of a known-good configuration must pass (a conditional net:
    conditional accuracy and class coverage; an unconditional one: the classifier's confidence
    and coverage)."""
    rows = []
    for variant, group in summary.groupby("variant", sort=True):
        conditional = group["cond_acc"].notna().all() if "cond_acc" in group else False
        metric, floor = ("cond_acc", CONTROL_ACC) if conditional else ("confidence", CONTROL_CONFIDENCE)
        per_seed = [f"seed {r.seed}: {getattr(r, metric):.3f}, {r.classes_covered} classes"
                    for r in group.sort_values("seed").itertuples()]
        passed = bool(((group[metric] >= floor) & (group["classes_covered"] >= CONTROL_CLASSES)).all())
        rows.append(Claim(
            "control", f"{variant} on {group[DATA].iloc[0]}: {metric} >= {floor} with >= {CONTROL_CLASSES} "
                       f"classes covered, every seed", "-", "; ".join(per_seed),
            f"each seed against the threshold ({len(group)} seed{'s' * (len(group) != 1)})", PASS if passed else FAIL))
    return rows


REPORT = StudyReport(claims=controls, claims_heading="Controls (each must pass)")
