"""BN-statistics adaptation (Schneider et al., NeurIPS 2020; CEMA's ``bn_adapt`` baseline).

The edge normalises every test batch with that batch's own statistics; the cloud does nothing.
"""

from __future__ import annotations

from simulator.adaptation.base import ADAPTERS
from simulator.adaptation.none import SourceAdapter


@ADAPTERS.register("bn_stats")
class BatchStatsAdapter(SourceAdapter):
    """BN adaptation: the edge uses each test batch's statistics; no cloud work, no downloads."""

    method_names = {"none": "BN adapt"}  # with the upload policy none
    rank = 1

    edge_norm = "batch"
