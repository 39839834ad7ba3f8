"""Upload policies, found by name in ``UPLOAD_POLICIES``: none, all, random, cema, eata, budget,
uncertain."""

from simulator.registry import Registry

UPLOAD_POLICIES: Registry = Registry("upload policy")

from policies.upload import all, budget, cema, eata, none, random, uncertain  # noqa: E402, F401  (register built-ins)
from policies.upload.base import REASONS, UploadPolicy  # noqa: E402

__all__ = ["REASONS", "UPLOAD_POLICIES", "UploadPolicy"]
