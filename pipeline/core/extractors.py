"""The metric feature extractors, by name: each declared once here, read by config (validation),
metrics (torch-fidelity's registry) and the report (which IS / FID to quote).

Kept free of heavy imports so that validating params.yaml does not load torch-fidelity.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator

from pipeline.core.schema import did_you_mean


@dataclass(frozen=True)
class Extractor:
    name: str
    fidelity_name: str  # its name in torch-fidelity's feature-extractor registry
    quote_rank: int  # the report quotes the lowest-ranked extractor a study measured with (0: papers' numbers)


EXTRACTORS = {e.name: e for e in (
    Extractor("effnet", "effnet", 1),  # ImageNet EfficientNet-Lite0: its weights install with pip, works offline
    Extractor("inception", "inception-v3-compat", 0),  # torch-fidelity's Inception-v3: the IS / FID papers report
    Extractor("classifier", "ganlab-classifier", 2),  # the dataset's own classifier (models/classifier/)
)}


def known_extractor(name: str) -> str:
    """`name` if it is an extractor, else a ValueError listing them (with a did-you-mean)."""
    if name not in EXTRACTORS:
        raise ValueError(f"unknown extractor '{name}' ({did_you_mean(str(name), EXTRACTORS)})")
    return name


ExtractorName = Annotated[str, AfterValidator(known_extractor)]  # a params.yaml field naming an extractor

# `fid_<x>_heldout` / `kid_<x>_heldout`: against real images kept out of training (a G that copies its
# training images scores well against those only); metrics writes the suffix, the report reads it.
HELDOUT = "_heldout"


def quoted_first() -> list[str]:
    """Extractor names in the order the report prefers to quote their IS / FID."""
    return sorted(EXTRACTORS, key=lambda name: EXTRACTORS[name].quote_rank)
