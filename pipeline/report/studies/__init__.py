"""Report plug-ins keyed by the study's name in params.yaml: each study's claims, tables and plots
beyond the generic ones. A new study needs an entry here only if its page should differ."""
from __future__ import annotations

from pipeline.report.studies import acgan_classes, controls, generator_loss, loss_budget, projected_gan
from pipeline.report.studies.base import GENERIC, StudyReport

STUDIES: dict[str, StudyReport] = {
    "controls": controls.REPORT,
    "generator_loss": generator_loss.REPORT,
    "acgan_classes": acgan_classes.REPORT,
    "projected_gan": projected_gan.REPORT,
    "loss_budget": loss_budget.REPORT,  # sweeps (pipeline.core.sweeps): budget curves per loss
}


def report_for(study: str) -> StudyReport:
    """The study's plug-in, or the generic page for a study without one."""
    return STUDIES.get(study, GENERIC)
