"""Upload policies, found by name in ``UPLOAD_POLICIES``: none, all, random, cema, eata, budget,
uncertain.

The registry lives in :mod:`policies.upload.base`, which the policies' modules import; this package
only imports them, so that importing it registers every built-in policy.
"""

from policies.upload import all, budget, cema, eata, none, random, uncertain  # noqa: F401  (register built-ins)
from policies.upload.base import REASONS, UPLOAD_POLICIES, UploadPolicy

__all__ = ["REASONS", "UPLOAD_POLICIES", "UploadPolicy"]
