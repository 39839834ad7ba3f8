"""What both clouds (:class:`simulator.fleet.cloud.Cloud`, which ships normalization states, and
:class:`simulator.fleet.redeploy.ModelCloud`, which ships whole models) keep the same way: which
scope a device belongs to, and per scope the newest result whose simulated compute is over."""

from __future__ import annotations

import torch

#: per scope: (version, tensors, produced_s, samples_s)
Published = dict[object, tuple[int, dict[str, torch.Tensor], float, float]]


class ScopedPublisher:
    """A cloud's scopes (one shared, or one per device) and what it has published in each.

    Subclasses set ``per_device_scope`` and call :meth:`_init_published` in their constructor."""

    per_device_scope: bool
    _published: Published

    def _init_published(self) -> None:
        self._published = {}

    def scope(self, device: int) -> int:
        return device if self.per_device_scope else 0

    def latest_version(self, device: int) -> int:
        """Version of the newest result of ``device``'s scope whose compute is over (0: none)."""
        published = self._published.get(self.scope(device))
        return 0 if published is None else published[0]
