"""When a completion is flagged as poor (the search's and the network's reports)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QualityLimits:
    """When a completion is flagged as poor in reports.

    * poor fit: G(inputs) misses the known pixels around the hole (those the contextual
      loss weighs, weighted alike) by more than ``max_context_error`` grey levels on
      average: the seam is visible, or the result ignores the input;
    * unrealistic: the discriminator scores the completed face below the
      ``d_quantile`` quantile of its scores for the generator's own random samples (the
      candidates the search drew), i.e. less like a face than the generator usually is.

    ``max_context_error`` is set from the CelebA benchmark (docs/completion.md)."""
    max_context_error: float = 40.0
    d_quantile: float = 0.05
