"""A model family: members with measured accuracy and counted MACs, the table selection reads.

AdaptiveNet (Wen et al., MobiCom 2023) picks, per device, the most accurate model of a family that
meets the device's latency budget. What a selection policy needs of each member is two numbers: how
accurate it is (measured on a stated image set, never typed in) and how much work one image costs
(multiply-accumulates, counted by :func:`simulator.models.flops.count_macs`); the device's hardware
profile turns the work into latency. A family is stored as a small JSON file that records the
command which regenerates it and the data it was measured on; shipped families live next to this
module in ``families/<name>.json`` and are found by name, any other file by its path.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FamilyError",
    "FamilyMember",
    "ModelFamily",
    "family_dir",
    "family_names",
    "load_family",
    "measure_family",
]


class FamilyError(ValueError):
    """A family file that cannot be found or read, or a family that makes no sense."""


@dataclass(frozen=True)
class FamilyMember:
    """One model of a family: its zoo name, measured top-1 accuracy and MACs per image."""

    model: str
    accuracy: float
    macs: int
    correct: int = 0
    images: int = 0
    params: int = 0


@dataclass
class ModelFamily:
    """Members (any order in the file; kept as given) and where their figures come from."""

    name: str
    members: list[FamilyMember]
    input_shape: tuple[int, int, int] = (3, 32, 32)
    measured_on: dict[str, Any] = field(default_factory=dict)
    command: str = ""

    def __post_init__(self) -> None:
        if not self.members:
            raise FamilyError(f"family {self.name!r} has no members")
        names = [m.model for m in self.members]
        if len(set(names)) != len(names):
            raise FamilyError(f"family {self.name!r} lists a model twice: {names}")
        for m in self.members:
            if not 0.0 <= m.accuracy <= 1.0 or m.macs <= 0:
                raise FamilyError(
                    f"family {self.name!r} member {m.model!r}: accuracy must be in [0, 1] and "
                    f"macs > 0, got {m.accuracy} and {m.macs}"
                )

    def member(self, model: str) -> FamilyMember:
        for m in self.members:
            if m.model == model:
                return m
        raise FamilyError(f"{model!r} is not in family {self.name!r} ({', '.join(self.models)})")

    @property
    def models(self) -> list[str]:
        return [m.model for m in self.members]

    def to_json(self) -> str:
        data = {
            "name": self.name,
            "command": self.command,
            "measured_on": self.measured_on,
            "input_shape": list(self.input_shape),
            "members": [asdict(m) for m in self.members],
        }
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "") -> ModelFamily:
        try:
            members = [FamilyMember(**m) for m in data["members"]]
            return cls(
                name=str(data.get("name", Path(where).stem)),
                members=members,
                input_shape=tuple(int(v) for v in data.get("input_shape", (3, 32, 32))),  # type: ignore[arg-type]
                measured_on=dict(data.get("measured_on", {})),
                command=str(data.get("command", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, FamilyError):
                raise
            raise FamilyError(f"family file {where}: not a family table ({exc})") from None


def family_dir() -> Path:
    """Folder of the shipped family tables (``policies/selection/families``)."""
    return Path(__file__).resolve().parent / "families"


def family_names() -> list[str]:
    """Names of the shipped families."""
    return sorted(p.stem for p in family_dir().glob("*.json"))


def load_family(name_or_path: str | Path) -> ModelFamily:
    """A shipped family by name (``cifar10_resnet``), or a family JSON file by path."""
    text = str(name_or_path)
    path = family_dir() / f"{text}.json" if text in family_names() else Path(text).expanduser()
    if not path.is_file():
        raise FamilyError(
            f"unknown family {text!r}: neither a shipped family ({', '.join(family_names())}) "
            "nor an existing JSON file (build one with `fleetsim zoo family`)"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise FamilyError(f"family file {path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise FamilyError(f"family file {path}: must hold a JSON object")
    return ModelFamily.from_dict(data, str(path))


def measure_family(
    models: list[str],
    images: np.ndarray,
    labels: np.ndarray,
    *,
    name: str,
    measured_on: dict[str, Any] | None = None,
    command: str = "",
    batch_size: int = 256,
    checkpoints: dict[str, str | Path] | None = None,
) -> ModelFamily:
    """Evaluate each zoo model on ``images`` (uint8 NHWC) and count its MACs per image.

    Accuracy is top-1 over all images, each model in eval mode on its pretrained weights (or the
    given checkpoint); MACs come from :func:`~simulator.models.flops.count_macs` at the images'
    resolution. ``measured_on`` gets the image count and the md5 of the pixel and label bytes, so
    the file says exactly which data it was measured on.
    """
    import torch

    from simulator.models.flops import count_macs
    from simulator.models.zoo import create_model

    if images.ndim != 4 or images.shape[-1] != 3 or len(images) != len(labels) or not len(images):
        raise FamilyError(
            f"need uint8 images (N, H, W, 3) and N labels, N > 0; got {images.shape} and "
            f"{labels.shape}"
        )
    height, width = images.shape[1:3]
    num_classes = int(labels.max()) + 1
    x_all = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    y_all = torch.from_numpy(labels.astype(np.int64))
    members = []
    for model_name in models:
        checkpoint = (checkpoints or {}).get(model_name)
        model = create_model(model_name, num_classes=max(num_classes, 10), checkpoint=checkpoint)
        correct = 0
        with torch.inference_mode():
            for start in range(0, len(x_all), batch_size):
                x = x_all[start : start + batch_size].float().div_(255.0)
                prediction = model(x).argmax(dim=1)
                correct += int((prediction == y_all[start : start + batch_size]).sum())
        members.append(
            FamilyMember(
                model=model_name,
                accuracy=correct / len(x_all),
                macs=count_macs(model, (3, height, width)),
                correct=correct,
                images=len(x_all),
                params=sum(p.numel() for p in model.parameters()),
            )
        )
    provenance = dict(measured_on or {})
    provenance.update(
        images=len(x_all),
        images_md5=hashlib.md5(np.ascontiguousarray(images).tobytes()).hexdigest(),
        labels_md5=hashlib.md5(labels.astype("<i8").tobytes()).hexdigest(),
    )
    return ModelFamily(name, members, (3, height, width), provenance, command)
