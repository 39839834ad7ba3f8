"""Logits of a frozen model, computed once and shared on disk by every run of a sweep.

A frozen model in eval mode (running BN statistics) maps each image to the same logits whatever the
batch it comes in, so its logits can be cached per image. Entries live in one SQLite file per model
(``$FLEETSIM_CACHE/logits/<name>-<weights fingerprint>.sqlite``, WAL mode, so the processes of a
parallel sweep share it safely), keyed by a hash of the image's float32 pixels. Changing any weight
changes the fingerprint, so stale logits are never used.

Exactness: missing rows are computed in passes of at least four rows (padded with copies), the
same rule as the edge executor, because CPU kernels for one or two images round differently from
those for larger batches. A cached row therefore equals a freshly computed one bit for bit, and a
run gives the same numbers with a cold cache, a warm one, or none.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = [
    "MIN_EXACT_ROWS",
    "LogitCache",
    "default_logit_root",
    "forward_rows",
    "model_fingerprint",
]

#: Passes of fewer rows are padded (with copies) to this many: CPU kernels for 1-2 images round
#: differently from those for larger batches (measured for conv nets on x86 with torch 2.14), while
#: every size from 3 up gave bit-identical rows. Shared with the edge executor.
MIN_EXACT_ROWS = 4


def default_logit_root() -> Path:
    """``$FLEETSIM_CACHE/logits`` if ``FLEETSIM_CACHE`` is set, else ``~/.cache/fleetsim/logits``."""
    env = os.environ.get("FLEETSIM_CACHE")
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "fleetsim"
    return base / "logits"


def model_fingerprint(model: nn.Module) -> str:
    """Hex digest of every parameter and buffer (names, shapes, dtypes, memory layout, values),
    and of the device type when it is not the CPU.

    The layout and the device count because they change how convolutions round: logits computed
    on a GPU are never served to a CPU run, or the other way round.
    """
    digest = hashlib.blake2b(digest_size=16)
    state = model.state_dict()
    devices = {t.device.type for t in state.values()} - {"cpu"}
    if devices:  # CPU fingerprints stay what they were before GPUs were supported
        digest.update(f"device:{','.join(sorted(devices))};".encode())
    for name, tensor in sorted(state.items()):
        channels_last = tensor.ndim == 4 and tensor.is_contiguous(memory_format=torch.channels_last)
        t = tensor.detach().cpu().contiguous()
        layout = "cl" if channels_last and not tensor.is_contiguous() else "c"
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}:{layout};".encode())
        digest.update((t.float() if t.dtype == torch.bfloat16 else t).numpy().tobytes())
    return digest.hexdigest()


def forward_rows(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``model(images)`` in eval mode without gradient, tiny passes padded to four rows."""
    n = len(images)
    if n < MIN_EXACT_ROWS:
        images = torch.cat([images, images[:1].expand(MIN_EXACT_ROWS - n, *images.shape[1:])])
    with torch.no_grad():
        return model(images)[:n]


class LogitCache:
    """Lookup-or-compute logits of one frozen ``model``.

    ``persist=False`` keeps them in memory for this process only (one run); with ``persist`` the
    SQLite file is the only store, so memory stays flat however many images pass.
    """

    def __init__(
        self,
        model: nn.Module,
        name: str = "model",
        root: str | Path | None = None,
        persist: bool = True,
    ):
        self.model = model
        self.hits = self.misses = 0
        self._memory: dict[bytes, np.ndarray] = {}
        self._db: sqlite3.Connection | None = None
        self.path: Path | None = None
        if persist:
            folder = Path(root) if root is not None else default_logit_root()
            folder.mkdir(parents=True, exist_ok=True)
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
            self.path = folder / f"{safe}-{model_fingerprint(model)}.sqlite"
            self._db = sqlite3.connect(self.path, timeout=60)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS logits (key BLOB PRIMARY KEY, value BLOB NOT NULL)"
            )
            self._db.commit()

    @staticmethod
    def _key(image: torch.Tensor) -> bytes:
        return hashlib.blake2b(image.numpy().tobytes(), digest_size=16).digest()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (n, C) of float images (n, C, H, W) on the CPU."""
        x = images.detach().to(device="cpu", dtype=torch.float32).contiguous()
        keys = [self._key(row) for row in x]
        found = {k: self._memory[k] for k in keys if k in self._memory}
        wanted = [k for k in dict.fromkeys(keys) if k not in found]
        if wanted and self._db is not None:
            for start in range(0, len(wanted), 500):
                part = wanted[start : start + 500]
                rows = self._db.execute(
                    f"SELECT key, value FROM logits WHERE key IN ({','.join('?' * len(part))})",
                    part,
                ).fetchall()
                for key, value in rows:
                    found[key] = np.frombuffer(value, dtype=np.float32)
        missing = [i for i, k in enumerate(keys) if k not in found]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            device = next(self.model.parameters()).device
            fresh = forward_rows(self.model, x[missing].to(device)).float().cpu().numpy()
            new = {keys[i]: row.copy() for i, row in zip(missing, fresh, strict=True)}
            found.update(new)
            if self._db is None:
                self._memory.update(new)
            else:
                self._db.executemany(
                    "INSERT OR IGNORE INTO logits (key, value) VALUES (?, ?)",
                    [(k, v.tobytes()) for k, v in new.items()],
                )
                self._db.commit()
        return torch.from_numpy(np.stack([found[k] for k in keys]))

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
