"""What a study's report page adds to the generic one: one StudyReport per study, GENERIC for the rest."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from pipeline.report.claims import Claim

# (the study's summary rows, its steps[, its per-class accuracies: report.collect's per_class]) -> claims;
# per_class is optional so a caller passing two frames still works (a claim needing it then says so)
ClaimsFn = Callable[..., list[Claim]]
# (study, its summary rows, its other frames by name: history, steps, per_class, plots dir) -> (sections, plots)
ExtraFn = Callable[[str, pd.DataFrame, dict[str, pd.DataFrame], Path], tuple[list[str], list[Path]]]


@dataclass(frozen=True)
class StudyReport:
    """A study's own parts of its page; the defaults are the generic page, so a study without a
    plug-in still gets every generic table and plot. Plug-ins select runs by the typed columns of
    the summary (model, loss, num_classes, nets, seed), never by parsing variant labels: a label
    is only shown, or used as an opaque key for one configuration."""

    claims: ClaimsFn | None = None  # the write-ups' claims beside ours (none: no claims section)
    claims_heading: str = "The write-ups' claims beside ours"
    by: str | None = "variant"  # what the comparison tables group runs by; None: the study's own tables replace them
    iteration_plots: bool = True  # D(G(z)) and G's gradient norm per logged iteration
    extra: ExtraFn | None = None  # sections and plots of its own, after the comparisons, before the class view


GENERIC = StudyReport()
