"""The training objective, composed of terms: each term is one file that says what it adds to D's
and to G's loss, which statistics it logs and what it needs. The step (pipeline.train.step) knows none
of them: it runs D and G and hands every update to the terms in TERMS order. A term sees the
settings and data it is built from (TrainingContext) and the update it is part of (DStep, GStep),
never the loop.

To add a variant: write a `Term` here, give it a `from_config` that returns it when the
experiment asks for it (its setting in params.yaml), and list it in TERMS.
"""
from __future__ import annotations

from pipeline.train.terms.adversarial import Adversarial
from pipeline.train.terms.augmentation import Augmentation
from pipeline.train.terms.base import DStep, GStep, Term, TrainingContext
from pipeline.train.terms.class_head import ClassHead
from pipeline.train.terms.feature_matching import FeatureMatching
from pipeline.train.terms.gradient_penalty import GradientPenalty
from pipeline.train.terms.k_plus_1 import KPlus1

# The order is the order of the losses' sums (and of the random draws): changing it changes results.
TERMS: tuple[type[Term], ...] = (Augmentation, Adversarial, GradientPenalty, ClassHead, KPlus1, FeatureMatching)


def terms_for(context: TrainingContext) -> list[Term]:
    """The terms an experiment's settings ask for, in TERMS order."""
    return [term for cls in TERMS if (term := cls.from_config(context)) is not None]


__all__ = ["DStep", "GStep", "Term", "TrainingContext", "TERMS", "terms_for", "KPlus1"]
