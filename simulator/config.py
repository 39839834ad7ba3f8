"""The scenario schema: YAML -> validated :class:`Scenario`, with dotted overrides and clear errors.

Validation happens once, here, at the edge of the program. Every problem is reported with its dotted
path, the value given and what is allowed; the rest of the simulator trusts the typed objects.

Plugins (upload policies, cloud adapters, routing and selection policies) carry their own pydantic
``Config``. Their parameters live in a sub-section named after the plugin (``policy.cema.e_min``,
``cloud.cema.lr_edge``), so a YAML can hold the parameters of several plugins and a sweep can switch
``policy.name`` without editing the file; :class:`PluginSection` is that pattern, once.
"""

from __future__ import annotations

import copy
import importlib
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from simulator.hardware import CLOUD_PROFILES, CloudProfile, HardwareProfile
from simulator.plugins import PluginError, import_plugin, is_path, load_entry_points
from simulator.registry import Registry
from simulator.traces.model import TraceEnd
from simulator.traces.readers import TraceFormat

# --------------------------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True)
class Problem:
    """One invalid input: where (dotted path), what was given, what is wrong / allowed."""

    path: str
    value: Any
    message: str

    def __str__(self) -> str:
        shown = "" if self.value is _MISSING else f" = {_short(self.value)}"
        return f"{self.path or '<scenario>'}{shown}: {self.message}"


class ScenarioError(ValueError):
    """An invalid scenario; ``problems`` lists every problem found."""

    def __init__(self, problems: list[Problem], source: str = ""):
        self.problems = problems
        self.source = source
        head = f"invalid scenario{f' {source}' if source else ''}"
        super().__init__(head + ":\n" + "\n".join(f"  - {p}" for p in problems))


_MISSING = object()


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------------
# Choices: each defined once, here; the schema's fields use them, and code that checks or lists a
# choice reads its values with ``typing.get_args`` (``get_args(CloudSchedule)``).

Split = Literal["test", "train"]
CorruptionSource = Literal["generated", "folder"]
StreamSchedule = Literal["continual", "random", "mixed", "gradual"]
GradualStart = Literal["peak", "low"]
Arrival = Literal["fixed", "poisson"]
LatencyDist = Literal["constant", "normal", "lognormal", "empirical"]
Encoding = Literal["raw", "jpeg", "png"]
CloudScope = Literal["shared", "per_device"]
CloudSchedule = Literal["fifo", "round_robin", "oldest_first"]
DownlinkPayload = Literal["full", "delta"]
StateDtype = Literal["float32", "float16"]


# --------------------------------------------------------------------------------------------------
# Schema


#: The message for true/false given to a number field (core sections and plugin parameters).
NOT_A_BOOLEAN = "should be a number, not true/false"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_as_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """``true``/``false`` for a number field is a mistake, not 1/0 (pydantic would take it)."""
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and _number_not_bool(field.annotation):
            raise ValueError(NOT_A_BOOLEAN)
        return value


def _number_not_bool(annotation: Any) -> bool:
    """Whether a field of this type takes numbers (``int``, ``float | None``, ...) but not
    booleans, so that a YAML ``true`` there is a mistake."""
    kinds = set(typing.get_args(annotation)) if typing.get_args(annotation) else {annotation}
    return bool(kinds & {int, float}) and bool not in kinds


def _per_device(value: Any, *, unit: str, allow_zero: bool) -> Any:
    """A scalar for every device, or a list cycled over devices (device i gets ``v[i % len(v)]``)."""
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ValueError("must be a number or a non-empty list of numbers")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(
                f"must be a number in {unit} (or a list of them), got {type(v).__name__}"
            )
        if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
            bound = ">= 0" if allow_zero else "> 0"
            raise ValueError(f"must be {bound} {unit}")
        out.append(float(v))
    return out if isinstance(value, list) else out[0]


def _registered(registry: Any, name: str) -> str:
    """``name`` if ``registry`` has it, else a ValueError listing what it has."""
    if name not in registry:
        raise ValueError(f"unknown {registry.kind}; allowed: {', '.join(registry.names())}")
    return name


class PluginSection(Section):
    """A section that picks one plug-in of a registry by name and holds plug-in parameters in
    sub-sections named after them (``policy.cema.e_min``), so that a YAML can hold the parameters
    of several plug-ins and a sweep can switch the plug-in without editing the file.

    A kind of plug-in section is one subclass: ``registry_at`` says where its registry lives
    (``"package:NAME"``, imported when first needed: the plug-ins import torch, loading the schema
    does not), ``selector`` which field names the plug-in, and that field is declared as usual. Each
    plug-in's parameters are validated against its own pydantic ``Config``
    (:meth:`validate_plugins`) and kept apart from the section's fields.
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    registry_at: ClassVar[str]
    selector: ClassVar[str] = "name"
    _plugins: dict[str, BaseModel] = PrivateAttr(default_factory=dict)

    @classmethod
    def registry(cls) -> Registry:
        """The registry the plug-ins of this section are found in."""
        module, _, name = cls.registry_at.partition(":")
        return getattr(importlib.import_module(module), name)

    @field_validator("*")
    @classmethod
    def _known_plugin(cls, value: Any, info: ValidationInfo) -> Any:
        return _registered(cls.registry(), value) if info.field_name == cls.selector else value

    @property
    def selected(self) -> str:
        """The name of the plug-in in use."""
        return getattr(self, self.selector)

    @property
    def plugin(self) -> Any:
        """The registered class of the plug-in in use (its capability flags, its ``Config``)."""
        return self.registry().get(self.selected)

    def params(self, name: str | None = None) -> BaseModel:
        """Validated parameters of plug-in ``name`` (default: the one in use); a plug-in without a
        sub-section in the scenario gets its defaults."""
        name = name or self.selected
        if name in self._plugins:
            return self._plugins[name]
        return self.registry().get(name).Config()

    def resolved(self) -> dict[str, Any]:
        """The section's values and the parameters of each plug-in it holds, as plain data."""
        data = self.model_dump(mode="json")
        for key, params in self._plugins.items():
            data[key] = params.model_dump(mode="json", by_alias=True)
        return data

    @classmethod
    def validate_plugins(
        cls, section: str, raw: dict[str, Any]
    ) -> tuple[dict[str, BaseModel], list[Problem]]:
        """The parameters of each plug-in named in the raw section ``raw`` (the one in use always
        included), validated against its ``Config``, and the problems found (dotted under
        ``section``). Works on the raw dict, so these problems are reported together with the rest
        of the scenario's."""
        registry, own = cls.registry(), list(cls.model_fields)
        extras = {k: v for k, v in raw.items() if k not in own}
        selected = raw.get(cls.selector, cls.model_fields[cls.selector].default)
        if selected in registry:
            extras.setdefault(selected, {})
        plugins: dict[str, BaseModel] = {}
        problems: list[Problem] = []
        for key, value in extras.items():
            if key not in registry:
                allowed = ", ".join([*own, *(f"{n} (parameters)" for n in registry.names())])
                problems.append(
                    Problem(f"{section}.{key}", value, f"unknown key; allowed: {allowed}")
                )
                continue
            if value is None:
                value = {}
            if not isinstance(value, dict):
                problems.append(
                    Problem(f"{section}.{key}", value, f"must be a mapping of {key} parameters")
                )
                continue
            config_cls = registry.get(key).Config
            numbers = {
                given
                for name, field in config_cls.model_fields.items()
                if _number_not_bool(field.annotation)
                for given in (name, field.alias)
            }
            booleans = [
                Problem(f"{section}.{key}.{given}", given_value, NOT_A_BOOLEAN)
                for given, given_value in value.items()
                if given in numbers and isinstance(given_value, bool)
            ]
            if booleans:  # pydantic would take true/false as 1/0
                problems.extend(booleans)
                continue
            try:
                plugins[key] = config_cls.model_validate(value)
            except ValidationError as exc:
                problems.extend(_problems_from(exc, prefix=(section, key), model=config_cls))
        return plugins, problems

    def adopt_plugins(self, plugins: dict[str, BaseModel]) -> None:
        """Keep the validated plug-in parameters and drop their raw sub-sections."""
        self._plugins = plugins
        for key in list(self.model_extra or {}):
            del self.model_extra[key]


def per_device_value(value: float | list[float], device: int) -> float:
    """The value of a per-device field for device ``device``."""
    return value[device % len(value)] if isinstance(value, list) else value


class DatasetConfig(Section):
    """Which images the devices see."""

    name: str = Field("synthetic", description="dataset name (fleetsim list datasets)")
    root: Path | None = Field(
        None,
        description="folder holding the data (cifar10: cifar-10-batches-py or npz files; "
        "imagefolder: <class>/<image> folders, null: $FLEETSIM_IMAGENET)",
    )
    split: Split = Field("test", description="which split the streams draw from")
    variant: str = Field(
        "auto",
        description="cifar10: auto, standard (pickles), exact_prefix (bit-exact prefix), jpeg "
        "(JPEG-derived) or embedded (512 bit-exact test images shipped in the package); "
        "imagefolder: auto, or <corruption>/<severity> to read that ImageNet-C domain folder "
        "under root as the dataset",
    )
    size: int | None = Field(None, gt=0, description="keep (or generate) only this many images")
    cache: bool = Field(
        False,
        description="read corrupted images from the disk cache (built on first use, shared by "
        "runs; $FLEETSIM_CACHE or ~/.cache/fleetsim/corrupted) instead of corrupting per batch",
    )
    corruption_source: CorruptionSource = Field(
        "generated",
        description="where corrupted images come from: generated (fleetsim's corruptions of the "
        "dataset's images), or folder (imagefolder only: the pre-corrupted files of an ImageNet-C "
        "tree, corrupted_root/<corruption>/<severity>/<class>/<file>, paired with the clean "
        "images by relative path)",
    )
    corrupted_root: Path | None = Field(
        None,
        description="the ImageNet-C tree read when corruption_source is folder "
        "(null: $FLEETSIM_IMAGENET_C)",
    )

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        from simulator.data.datasets import DATASETS

        return _registered(DATASETS, v)

    @field_validator("root", "corrupted_root")
    @classmethod
    def _root_exists(cls, v: Path | None) -> Path | None:
        if v is not None and not Path(v).expanduser().exists():
            raise ValueError("folder does not exist")
        return v

    @field_validator("variant")
    @classmethod
    def _known_variant(cls, v: str, info: ValidationInfo) -> str:
        from simulator.data.datasets import DATASET_VARIANTS, PLAIN_VARIANTS

        name = info.data.get("name")
        if name == "imagefolder" and v not in PLAIN_VARIANTS:
            from simulator.data.corruptions import CORRUPTIONS

            corruption, _, severity = v.partition("/")
            if corruption not in CORRUPTIONS or severity not in ("1", "2", "3", "4", "5"):
                raise ValueError(
                    "imagefolder variant must be auto or <corruption>/<severity 1-5> (e.g. "
                    f"fog/5); corruptions: {', '.join(CORRUPTIONS.names())}"
                )
        elif name in DATASET_VARIANTS and v not in DATASET_VARIANTS[name]:
            raise ValueError(f"not a {name} variant; allowed: {', '.join(DATASET_VARIANTS[name])}")
        return v

    @field_validator("corruption_source")
    @classmethod
    def _folder_source_fits(cls, v: str, info: ValidationInfo) -> str:
        if v == "folder" and info.data.get("name", "imagefolder") != "imagefolder":
            raise ValueError(
                f"folder pairs files by path and needs dataset.name imagefolder, not "
                f"{info.data['name']!r}"
            )
        if v == "folder" and info.data.get("cache"):
            raise ValueError(
                "the corruption cache (dataset.cache) holds generated corruptions only; set it "
                "false with corruption_source folder"
            )
        return v


class FleetConfig(Section):
    """How many edge devices share the cloud."""

    devices: int = Field(8, gt=0, le=100_000, description="number of edge devices")


#: The severity walk of schedule ``gradual`` when ``severities`` is not given: up from 1 to
#: ``severity`` and back down, one segment per step (CoTTA's gradual setting at severity 5).
def gradual_walk(severity: int) -> list[int]:
    """``[1, 2, ..., severity, ..., 2, 1]``: schedule gradual's default walk for a peak."""
    return [*range(1, severity + 1), *range(severity - 1, 0, -1)]


def _located_error(errors: list[tuple[tuple[str | int, ...], Any, str]]) -> ValidationError:
    """A ValidationError whose entries keep their own locations (``groups.1.schedule``) inside
    the section that raised it; model validators use it to point at the key at fault."""
    return ValidationError.from_exception_data(
        "scenario",
        [
            InitErrorDetails(
                type=PydanticCustomError("stream_combination", "{message}", {"message": text}),
                loc=loc,
                input=value,
            )
            for loc, value, text in errors
        ],
    )


def _device_ranges(devices: list[int] | set[int]) -> str:
    """``[0, 1, 2, 3, 7]`` -> ``"0-3, 7"``."""
    ordered = sorted(devices)
    runs: list[list[int]] = []
    for d in ordered:
        if runs and d == runs[-1][-1] + 1:
            runs[-1].append(d)
        else:
            runs.append([d])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def _known_corruption_names(names: list[str]) -> list[str]:
    from simulator.data.corruptions import CORRUPTIONS

    bad = [c for c in names if c != "clean" and c not in CORRUPTIONS]
    if bad:
        allowed = ["clean", *CORRUPTIONS.names()]
        raise ValueError(f"unknown corruption {bad[0]!r}; allowed: {', '.join(allowed)}")
    return names


def _concentration(value: float | None, what: str) -> float | None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ValueError(f"must be > 0 and finite ({what}), or null for none; got {value}")
    return value


class LabelShiftConfig(Section):
    """Label shift of each device's stream: a class prior per device and a temporally correlated
    class order, both drawn from Dirichlet distributions seeded from the scenario seed. Both off
    (null) by default: each device goes through the dataset in its own random order."""

    alpha: float | None = Field(
        None,
        description="concentration of each device's class prior, a draw from a symmetric "
        "Dirichlet (> 0): 0.1 gives each device a few dominant classes, 1 a skewed mix, 1000 "
        "nearly the uniform mix (i.i.d.); each sample's class is drawn from its device's prior; "
        "null: no prior",
    )
    correlation: float | None = Field(
        None,
        description="concentration of the temporally correlated class order (> 0; RoTTA's "
        "delta, 0.1 in its practical setting): each block of the stream is cut into time "
        "slots, each class's samples are spread over the slots by a Dirichlet draw, and each "
        "slot plays its classes one run after another; small: long runs of one class; null: "
        "classes in random order",
    )
    slots: int | None = Field(
        None,
        gt=0,
        description="time slots per correlated block (default: the number of classes, at most "
        "100, as RoTTA)",
    )
    block_samples: int | None = Field(
        None,
        gt=0,
        description="samples per correlated block (default: each domain segment, so each "
        "domain plays its own class order as in RoTTA; the whole stream for schedule mixed)",
    )

    @field_validator("alpha")
    @classmethod
    def _positive_alpha(cls, v: float | None) -> float | None:
        return _concentration(
            v, "a Dirichlet concentration: small = few classes per device, large = i.i.d."
        )

    @field_validator("correlation")
    @classmethod
    def _positive_correlation(cls, v: float | None) -> float | None:
        return _concentration(v, "a Dirichlet concentration: small = long runs of one class")

    @model_validator(mode="after")
    def _slots_need_correlation(self) -> LabelShiftConfig:
        if self.correlation is None:
            unused = [k for k in ("slots", "block_samples") if getattr(self, k) is not None]
            if unused:
                raise _located_error(
                    [
                        ((k,), getattr(self, k), "has no effect without labels.correlation")
                        for k in unused
                    ]
                )
        return self

    @property
    def active(self) -> bool:
        """Whether the stream's classes are shifted at all."""
        return self.alpha is not None or self.correlation is not None


class StreamGroup(Section):
    """Devices that share one schedule (an environment: a street, a farm). A key left out takes
    the stream's value; ``stagger`` is the exception (default false, see below)."""

    devices: list[int] = Field(
        min_length=1, description="the group's device ids (0 to fleet.devices - 1)"
    )
    corruptions: list[str] | None = Field(
        None, min_length=1, description="the group's domains, in order (default: the stream's)"
    )
    severity: int | None = Field(None, ge=1, le=5, description="the group's severity, 1-5")
    severities: list[int] | None = Field(
        None, min_length=1, description="the group's severity walk (schedule gradual)"
    )
    schedule: StreamSchedule | None = Field(None, description="the group's schedule")
    segment_samples: int | None = Field(
        None, gt=0, description="samples per domain segment (the group's timing)"
    )
    gradual_start: GradualStart | None = Field(
        None, description="where the group's first gradual walk starts"
    )
    stagger: bool = Field(
        False,
        description="rotate the group's corruption order by each device's position in the "
        "group (default false: the group's devices meet the same domain at the same time)",
    )
    labels: LabelShiftConfig | None = Field(
        None, description="the group's label shift (replaces the stream's labels whole)"
    )

    @field_validator("devices")
    @classmethod
    def _device_ids(cls, v: list[int]) -> list[int]:
        negative = [d for d in v if d < 0]
        if negative:
            raise ValueError(f"device ids are 0 or more, got {negative[0]}")
        repeated = sorted({d for d in v if v.count(d) > 1})
        if repeated:
            raise ValueError(f"device {repeated[0]} is listed twice")
        return v

    @field_validator("corruptions")
    @classmethod
    def _known_corruptions(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else _known_corruption_names(v)

    @field_validator("severities")
    @classmethod
    def _severities_in_range(cls, v: list[int] | None) -> list[int] | None:
        return _severity_walk(v)


def _severity_walk(v: list[int] | None) -> list[int] | None:
    bad = [s for s in v or [] if not 1 <= s <= 5]
    if bad:
        raise ValueError(f"severities are 1-5, got {bad[0]}")
    return v


#: Stream keys left out of the resolved config while at their defaults (StreamConfig.resolved).
QUIET_STREAM_KEYS = ("severities", "gradual_start", "labels", "groups")

#: The keys a stream group may set, besides its ``devices``.
GROUP_KEYS = (
    "corruptions",
    "severity",
    "severities",
    "schedule",
    "segment_samples",
    "gradual_start",
    "stagger",
    "labels",
)


class StreamConfig(Section):
    """What each device sees: a schedule of corruption domains, the classes of its samples and an
    arrival process; per device group (``groups``) where devices live in different places."""

    samples_per_device: int = Field(1024, gt=0, description="test samples each device classifies")
    batch_size: int = Field(64, gt=0, description="edge batch size (CEMA uses 64)")
    corruptions: list[str] = Field(
        default_factory=lambda: ["gaussian_noise", "defocus_blur", "contrast", "jpeg_compression"],
        min_length=1,
        description="domains, in order; 'clean' is the uncorrupted domain",
    )
    severity: int = Field(
        5, ge=1, le=5, description="corruption severity, 1-5 (schedule gradual: the walk's peak)"
    )
    severities: list[int] | None = Field(
        None,
        min_length=1,
        description="schedule gradual only: the severity walk each corruption goes through, one "
        "segment per step (default: 1 up to severity and back down, [1, 2, 3, 4, 5, 4, 3, 2, 1] "
        "at severity 5)",
    )
    schedule: StreamSchedule = Field(
        "continual",
        description="continual: the corruptions in order, cycling; random: Markov switching "
        "to another corruption each segment; mixed: each sample from a uniformly drawn "
        "corruption; gradual: the corruptions in order, each walking its severities one "
        "segment per step (CoTTA's gradual setting)",
    )
    gradual_start: GradualStart = Field(
        "peak",
        description="schedule gradual: peak starts the first corruption at the walk's highest "
        "severity and walks down (CoTTA: 5, 4, 3, 2, 1, then 1 ... 5 ... 1 for every next one); "
        "low walks the whole walk for every corruption (the test-time-adaptation benchmark's)",
    )
    segment_samples: int = Field(
        256, gt=0, description="samples per domain segment (gradual: per severity step)"
    )
    stagger: bool = Field(
        True, description="rotate each device's corruption order so devices see different domains"
    )
    labels: LabelShiftConfig = Field(
        default_factory=LabelShiftConfig,
        description="label shift: per-device class priors and temporally correlated classes",
    )
    groups: list[StreamGroup] | None = Field(
        None,
        min_length=1,
        description="device groups with their own schedule: [{devices: [0, 1], corruptions: "
        "[fog, snow], severity: 3, ...}, ...]; together they hold every device once",
    )
    arrival: Arrival = Field("fixed", description="sample arrival process")
    rate_hz: float | list[float] = Field(
        32.0, description="samples per second per device (> 0; a list is cycled over devices)"
    )

    @field_validator("rate_hz", mode="before")
    @classmethod
    def _positive_rate(cls, v: Any) -> Any:
        return _per_device(v, unit="Hz", allow_zero=False)

    @field_validator("corruptions")
    @classmethod
    def _known_corruptions(cls, v: list[str]) -> list[str]:
        return _known_corruption_names(v)

    @field_validator("severities")
    @classmethod
    def _severities_in_range(cls, v: list[int] | None) -> list[int] | None:
        return _severity_walk(v)

    @model_validator(mode="after")
    def _schedules_make_sense(self) -> StreamConfig:
        errors: list[tuple[tuple[str | int, ...], Any, str]] = []
        if self.groups is None:
            errors += self._schedule_errors(self, lambda key: (key,), "")
        else:
            errors += self._group_errors()
        if errors:
            raise _located_error(errors)
        return self

    def _group_errors(self) -> list[tuple[tuple[str | int, ...], Any, str]]:
        assert self.groups is not None
        errors: list[tuple[tuple[str | int, ...], Any, str]] = []
        owner: dict[int, int] = {}
        for i, group in enumerate(self.groups):
            for d in group.devices:
                if d in owner:
                    errors.append(
                        (
                            ("groups", i, "devices"),
                            group.devices,
                            f"device {d} is also in group {owner[d]}: each device belongs to "
                            "one group",
                        )
                    )
                    break
                owner[d] = i
            merged = self.for_group(i)

            def where(key: str, i: int = i, group: StreamGroup = group) -> tuple[str | int, ...]:
                return ("groups", i, key) if key in group.model_fields_set else (key,)

            note = f" (group {i}: devices {_device_ranges(group.devices)})"
            errors += self._schedule_errors(merged, where, note)
        # a stream key at fault in several groups that inherit it is reported once
        seen: set[tuple[str | int, ...]] = set()
        out = []
        for loc, value, text in errors:
            if len(loc) == 1 and loc in seen:
                continue
            seen.add(loc)
            out.append((loc, value, text))
        return out

    @staticmethod
    def _schedule_errors(
        config: StreamConfig, where: Any, note: str
    ) -> list[tuple[tuple[str | int, ...], Any, str]]:
        """What is wrong with one effective schedule (the stream's, or a group's merged with the
        stream's): keys that mean nothing for its schedule, and gradual walks of one severity."""
        errors = []
        if config.schedule == "gradual":
            if config.severities is None and config.severity == 1:
                errors.append(
                    (
                        where("severity"),
                        1,
                        "schedule gradual walks from severity 1 up to severity and back, so "
                        "severity 1 is one severity, nothing gradual: give severity 2-5, a walk "
                        f"in severities, or schedule continual{note}",
                    )
                )
            elif config.severities is not None and len(set(config.severities)) < 2:
                errors.append(
                    (
                        where("severities"),
                        config.severities,
                        "schedule gradual needs a walk of two or more different severities "
                        f"(e.g. [1, 2, 3, 4, 5, 4, 3, 2, 1]); for one severity use schedule "
                        f"continual{note}",
                    )
                )
            if (
                config.severities is not None
                and "severity" in config.model_fields_set
                and where("severity")[:-1] == where("severities")[:-1]
            ):
                errors.append(
                    (
                        where("severity"),
                        config.severity,
                        "give either severity (gradual walks 1 up to it and back) or severities "
                        f"(the walk itself), not both{note}",
                    )
                )
        else:
            if config.severities is not None:
                errors.append(
                    (
                        where("severities"),
                        config.severities,
                        f"is the severity walk of schedule gradual; schedule {config.schedule} "
                        f"uses severity (one value){note}",
                    )
                )
            if "gradual_start" in config.model_fields_set:
                errors.append(
                    (
                        where("gradual_start"),
                        config.gradual_start,
                        f"has no effect with schedule {config.schedule} (only gradual){note}",
                    )
                )
        return errors

    def for_group(self, group: int) -> StreamConfig:
        """Group ``group``'s effective stream: the stream's keys, overridden by those it sets
        (no groups of its own). Keys set by either count as set (``model_fields_set``)."""
        assert self.groups is not None
        chosen = self.groups[group]
        update = {k: getattr(chosen, k) for k in GROUP_KEYS if k in chosen.model_fields_set}
        if "severity" in update and "severities" not in update:
            update["severities"] = None  # the group's own peak wins over the stream's walk
        update.setdefault("stagger", False)  # a group is one environment unless it says otherwise
        return self.model_copy(update={**update, "groups": None})

    def group_of(self, device: int) -> int | None:
        """The index of ``device``'s group (None without groups)."""
        if self.groups is None:
            return None
        for i, group in enumerate(self.groups):
            if device in group.devices:
                return i
        raise ValueError(f"device {device} is in no stream group")

    def for_device(self, device: int) -> tuple[StreamConfig, int | None, int]:
        """``device``'s effective stream, its group (None without groups) and its position for
        ``stagger`` (its place in its group, or its id)."""
        group = self.group_of(device)
        if group is None:
            return self, None, device
        assert self.groups is not None
        return self.for_group(group), group, self.groups[group].devices.index(device)

    def effective(self) -> list[StreamConfig]:
        """Every effective stream in use: the stream's own, or each group's."""
        if self.groups is None:
            return [self]
        return [self.for_group(i) for i in range(len(self.groups))]

    def resolved(self, data: dict[str, Any]) -> dict[str, Any]:
        """The section's dump ``data`` for config.yaml: the keys added with schedules mixed and
        gradual, label shift and groups are left out while at their defaults, so a scenario
        without them keeps the config (and a sweep's config hash) it had; groups list only the
        keys they set."""
        defaults = StreamConfig().model_dump(mode="json")
        data = {k: v for k, v in data.items() if not (k in QUIET_STREAM_KEYS and v == defaults[k])}
        if data.get("groups") is not None:
            data["groups"] = [
                {k: v for k, v in group.items() if v is not None} for group in data["groups"]
            ]
        return data

    def walk(self) -> list[int]:
        """The severity walk of schedule gradual (``severities``, or 1 up to ``severity`` and
        back)."""
        return list(self.severities) if self.severities is not None else gradual_walk(self.severity)


class LatencyConfig(Section):
    """How each message's one-way latency is drawn around its device's ``network.latency_ms``, or
    from measured round-trip times (``dist: empirical``)."""

    dist: LatencyDist = Field(
        "constant",
        description="constant; normal (clipped at 0); lognormal (mean latency_ms, sd jitter_ms); "
        "empirical: half of an RTT drawn from latency.samples",
    )
    jitter_ms: float | list[float] = Field(
        0.0, description="standard deviation of the latency, ms (>= 0; per device as a list)"
    )
    samples: str | list[str] | None = Field(
        None,
        description="measured RTTs for dist empirical: a shipped RTT set (fleetsim list traces) "
        "or a file of RTTs in ms (PATH or PATH#SELECT, e.g. a 5Gophers ping log#5G/US-East); "
        "a list is cycled over devices",
    )

    @field_validator("jitter_ms", mode="before")
    @classmethod
    def _nonnegative_jitter(cls, v: Any) -> Any:
        return _per_device(v, unit="ms", allow_zero=True)

    @field_validator("samples")
    @classmethod
    def _readable_samples(cls, v: str | list[str] | None) -> str | list[str] | None:
        from simulator.traces import resolve_rtt

        if isinstance(v, list) and not v:
            raise ValueError("must be an RTT set or a non-empty list of them")
        for item in v if isinstance(v, list) else [] if v is None else [v]:
            try:
                resolve_rtt(item)
            except (ValueError, OSError) as exc:
                raise ValueError(f"RTT samples {item!r}: {exc}") from None
        return v

    @model_validator(mode="after")
    def _jitter_needs_a_distribution(self) -> LatencyConfig:
        jitters = self.jitter_ms if isinstance(self.jitter_ms, list) else [self.jitter_ms]
        if self.dist == "constant" and any(j > 0 for j in jitters):
            raise ValueError(
                f"jitter_ms {self.jitter_ms} needs dist normal or lognormal (dist is constant)"
            )
        if self.dist == "empirical" and self.samples is None:
            raise ValueError(
                "dist empirical needs samples (a shipped RTT set such as 4g-rtt, or a file)"
            )
        if self.dist == "empirical" and any(j > 0 for j in jitters):
            raise ValueError("jitter_ms has no effect with dist empirical (the samples spread)")
        if self.dist != "empirical" and self.samples is not None:
            raise ValueError(f"samples need dist empirical (dist is {self.dist})")
        return self

    def rtt_name(self, device: int) -> str | None:
        """The RTT samples of ``device`` (lists are cycled), or None."""
        if isinstance(self.samples, list):
            return self.samples[device % len(self.samples)]
        return self.samples


class OutageConfig(Section):
    """Gilbert-Elliott outages: each link alternates exponential good and bad (down) periods."""

    mean_good_s: float | list[float] = Field(
        60.0, description="mean time a link stays up between outages, s (> 0; per device as a list)"
    )
    mean_bad_s: float | list[float] = Field(
        5.0, description="mean duration of an outage, s (> 0; per device as a list)"
    )
    downlink: bool = Field(True, description="downlinks have outages too (drawn independently)")

    @field_validator("mean_good_s", "mean_bad_s", mode="before")
    @classmethod
    def _positive_sojourn(cls, v: Any) -> Any:
        return _per_device(v, unit="s", allow_zero=False)


class QueueConfig(Section):
    """The uplink send queue: messages waiting for the wire (during outages, or behind others)."""

    max_messages: int | None = Field(
        None, ge=0, description="messages that may wait; one more is dropped (null: unbounded)"
    )
    timeout_s: float | None = Field(
        None, gt=0, description="a message still waiting this long is dropped (null: never)"
    )


def _check_trace(v: Any, end: str, format: str) -> Any:
    from simulator.traces import TraceError, resolve_trace
    from simulator.traces.model import check_trace

    for path in v if isinstance(v, list) else [v]:
        try:
            trace = resolve_trace(path, format)  # type: ignore[arg-type]
            check_trace(list(trace.times_s), list(trace.mbps), end)
        except TraceError as exc:
            raise ValueError(f"bad trace: {exc}") from None
        except (ValueError, OSError) as exc:
            raise ValueError(f"bad trace {str(path)!r}: {exc}") from None
    return v


class NetworkConfig(Section):
    """Per-device links. A list value is cycled over devices (device i gets v[i % len(v)])."""

    uplink_mbps: float | list[float] = Field(10.0, description="uplink bandwidth, Mbit/s (> 0)")
    downlink_mbps: float | list[float] = Field(50.0, description="downlink bandwidth, Mbit/s (> 0)")
    latency_ms: float | list[float] = Field(
        20.0, description="one-way latency, ms (>= 0; unused with latency.dist empirical)"
    )
    latency: LatencyConfig = Field(
        default_factory=LatencyConfig, description="latency distribution (dist, jitter_ms)"
    )
    outage: OutageConfig | None = Field(
        None, description="Gilbert-Elliott outages per link (null: links never go down)"
    )
    queue: QueueConfig = Field(
        default_factory=QueueConfig, description="uplink send queue bound and timeout"
    )
    trace_end: TraceEnd = Field(
        "loop", description="after a bandwidth trace ends: loop it, or hold its last rate"
    )
    trace_format: TraceFormat = Field(
        "auto",
        description="format of trace files: csv (time_s,mbps), 5gophers, mahimahi, twocolumn, "
        "or auto (detected); shipped traces need none",
    )
    uplink_trace: Path | list[Path] | None = Field(
        None,
        description="a shipped trace (fleetsim list traces, e.g. 5g-walking-up) or a trace file "
        "(PATH or PATH#SELECT) replacing uplink_mbps with a piecewise-constant rate "
        "(a list is cycled over devices)",
    )
    downlink_trace: Path | list[Path] | None = Field(
        None, description="as uplink_trace, replacing downlink_mbps (a list is cycled)"
    )
    uplink_scale: float = Field(
        1.0,
        gt=0,
        description="every uplink rate (constant or trace) times this: the share of a device's "
        "uplink its adaptation traffic gets; the knob of a bandwidth-budget study",
    )
    downlink_scale: float = Field(1.0, gt=0, description="every downlink rate times this")
    trace_offset_s: float | list[float] = Field(
        0.0, description="start each device's trace replay this far into it, s (>= 0)"
    )
    cloud_ingress_mbps: float | None = Field(
        None, gt=0, description="cloud ingress shared max-min fairly by uplinks (null: unlimited)"
    )
    cloud_egress_mbps: float | None = Field(
        None, gt=0, description="cloud egress shared max-min fairly by downlinks (null: unlimited)"
    )
    encoding: Encoding = Field(
        "jpeg", description="how uploaded images are encoded (bytes measured by encoding them)"
    )
    jpeg_quality: int = Field(90, ge=1, le=100, description="JPEG quality when encoding is jpeg")
    header_bytes: int = Field(64, ge=0, description="per-message header bytes, each direction")

    @field_validator("uplink_mbps", "downlink_mbps", mode="before")
    @classmethod
    def _positive_bandwidth(cls, v: Any) -> Any:
        return _per_device(v, unit="Mbit/s", allow_zero=False)

    @field_validator("latency_ms", mode="before")
    @classmethod
    def _nonnegative_latency(cls, v: Any) -> Any:
        return _per_device(v, unit="ms", allow_zero=True)

    @field_validator("trace_offset_s", mode="before")
    @classmethod
    def _nonnegative_offset(cls, v: Any) -> Any:
        return _per_device(v, unit="s", allow_zero=True)

    @field_validator("uplink_trace", "downlink_trace", mode="before")
    @classmethod
    def _readable_trace(cls, v: Any, info: ValidationInfo) -> Any:
        if v is None:
            return v
        if isinstance(v, list) and not v:
            raise ValueError("must be a trace file or a non-empty list of them")
        if not all(isinstance(p, str | Path) for p in (v if isinstance(v, list) else [v])):
            raise ValueError("must be a shipped trace or a trace file (or a list of them)")
        return _check_trace(
            v, info.data.get("trace_end", "loop"), info.data.get("trace_format", "auto")
        )

    @model_validator(mode="after")
    def _lognormal_needs_a_mean(self) -> NetworkConfig:
        latencies = self.latency_ms if isinstance(self.latency_ms, list) else [self.latency_ms]
        if self.latency.dist == "lognormal" and min(latencies) <= 0:
            raise ValueError(
                f"latency.dist lognormal needs latency_ms > 0 for every device, got "
                f"{self.latency_ms} (dist normal allows 0)"
            )
        return self


def _check_model(v: str | None) -> str | None:
    if v is None:
        return v
    from simulator.models.zoo import check_model_name

    check_model_name(v)
    return v


def _check_file(v: Path | None) -> Path | None:
    if v is not None and not Path(v).expanduser().is_file():
        raise ValueError("file does not exist")
    return v


class EdgeConfig(Section):
    """The edge model and the device's simulated compute."""

    model: str = Field("synthetic_edge", description="edge model (fleetsim list models)")
    checkpoint: Path | None = Field(None, description="optional weights file for the edge model")
    pretrained: bool | None = Field(
        None,
        description="true on a timm:<name> model: timm's published weights (from checkpoint "
        "when given, else the Hugging Face / torch hub cache, else downloaded) with their input "
        "mean/std; null: zoo models pretrained, timm models random init",
    )
    ms_per_sample: float = Field(
        2.0, ge=0, description="simulated inference time per sample, ms (without a profile)"
    )
    ms_per_batch: float = Field(
        5.0, ge=0, description="simulated fixed cost per edge batch, ms (without a profile)"
    )
    profile: str | list[str] | None = Field(
        None,
        description="hardware profile (fleetsim list profiles) or a list cycled over devices: "
        "compute time from the model's MACs, and energy; null: ms_per_sample/ms_per_batch",
    )
    profiles: dict[str, HardwareProfile] = Field(
        default_factory=dict,
        description="your own profiles by name (gmacs_per_s, batch_overhead_ms, active_w, "
        "radio_tx_nj_per_byte, radio_rx_nj_per_byte); they may replace built-in ones",
    )

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        return _check_model(v)

    @model_validator(mode="after")
    def _known_profiles(self) -> EdgeConfig:
        from simulator.hardware import PROFILES

        names = self.profile if isinstance(self.profile, list) else [self.profile]
        if isinstance(self.profile, list) and not self.profile:
            raise ValueError("profile: must be a name or a non-empty list of names")
        known = sorted(set(PROFILES) | set(self.profiles))
        for name in names:
            if name is not None and name not in known:
                raise ValueError(f"profile: unknown profile {name!r}; allowed: {', '.join(known)}")
        return self

    def profile_name(self, device: int) -> str | None:
        """The profile name of ``device`` (lists are cycled), or None without profiles."""
        if isinstance(self.profile, list):
            return self.profile[device % len(self.profile)]
        return self.profile

    def hardware(self, device: int) -> HardwareProfile | None:
        """The profile of ``device`` (user-defined first, then built-in), or None."""
        from simulator.hardware import PROFILES

        name = self.profile_name(device)
        return None if name is None else self.profiles.get(name) or PROFILES[name]

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_exists(cls, v: Path | None) -> Path | None:
        return _check_file(v)


class CloudConfig(PluginSection):
    """The cloud adapter. Adapter parameters live in a sub-section named after it (cloud.cema.*)."""

    registry_at = "simulator.adaptation:ADAPTERS"
    selector = "adapter"

    teacher: str | None = Field(
        "synthetic_teacher", description="cloud foundation model (fleetsim list models)"
    )
    teacher_checkpoint: Path | None = Field(None, description="optional weights for the teacher")
    teacher_pretrained: bool | None = Field(
        None, description="as edge.pretrained, for the teacher (timm's published weights)"
    )
    adapter: str = Field("cema", description="cloud adaptation algorithm (fleetsim list adapters)")
    scope: CloudScope = Field(
        "shared", description="one edge state for the fleet, or one per device"
    )
    workers: int = Field(1, gt=0, description="cloud workers running adaptation steps in parallel")
    schedule: CloudSchedule = Field(
        "fifo",
        description="which queued upload a free worker serves next: arrival order, devices in "
        "turn, or the earliest-taken samples",
    )
    downlink_payload: DownlinkPayload = Field(
        "full",
        description="state sent down: the whole normalization state, or its difference to what "
        "the device holds (zero differences left out, sparse when smaller)",
    )
    delta_tolerance: float = Field(
        0.0,
        ge=0,
        description="delta payloads leave out differences at most this large (0: exact)",
    )
    gather: int = Field(
        1,
        gt=0,
        description="a worker serves up to this many queued messages of one scope together "
        "(batch formation across devices)",
    )
    profile: str = Field(
        "a100",
        description="cloud hardware profile (fleetsim list profiles): a step's simulated time "
        "from the MACs it computes (teacher and edge, forward and backward, replay rows)",
    )
    profiles: dict[str, CloudProfile] = Field(
        default_factory=dict,
        description="your own cloud profiles by name (gmacs_per_s, step_overhead_ms); they may "
        "replace built-in ones",
    )
    ms_per_step: float | None = Field(
        None,
        ge=0,
        description="override: a fixed simulated time per adaptation step, ms, whatever the "
        "step computes (null: from cloud.profile)",
    )
    state_dtype: StateDtype = Field(
        "float32", description="dtype of the normalization state sent down"
    )

    @field_validator("teacher")
    @classmethod
    def _known_teacher(cls, v: str | None) -> str | None:
        return _check_model(v)

    @model_validator(mode="after")
    def _known_profile(self) -> CloudConfig:
        known = sorted(set(CLOUD_PROFILES) | set(self.profiles))
        if self.profile not in known:
            raise ValueError(
                f"profile: unknown cloud profile {self.profile!r}; allowed: {', '.join(known)}"
            )
        return self

    @model_validator(mode="after")
    def _payload_fits_adapter(self) -> CloudConfig:
        if self.downlink_payload != "full" and self.plugin.ships_models:
            text = (
                f"{self.downlink_payload!r} is for normalization states; cloud.adapter "
                f"{self.adapter!r} ships whole models: set cloud.{self.adapter}.ship (full, "
                "changed, quantized) instead"
            )
            raise _located_error([(("downlink_payload",), self.downlink_payload, text)])
        return self

    def hardware(self) -> CloudProfile:
        """The cloud profile in use (user-defined first, then built-in)."""
        return self.profiles.get(self.profile) or CLOUD_PROFILES[self.profile]

    @field_validator("teacher_checkpoint")
    @classmethod
    def _teacher_checkpoint_exists(cls, v: Path | None) -> Path | None:
        return _check_file(v)


class PolicyConfig(PluginSection):
    """The upload policy. Its parameters live in a sub-section named after it (policy.cema.*)."""

    registry_at = "policies.upload:UPLOAD_POLICIES"

    name: str = Field("cema", description="upload policy (fleetsim list policies)")


class RoutingConfig(PluginSection):
    """Who answers each sample: the edge model, or the cloud foundation model (``cloud.teacher``)
    for offloaded samples. Parameters live in a sub-section named after the policy
    (``routing.edgefm.*``)."""

    registry_at = "policies.routing:ROUTING_POLICIES"

    name: str = Field("edge_only", description="routing policy (fleetsim list routing)")


BudgetMs = float | list[float] | dict[str, float]


def _budget_ms(v: Any) -> Any:
    """A latency budget: ms for every device, a list cycled over devices, or ms per profile."""
    if isinstance(v, dict):
        if not v:
            raise ValueError("must be ms, a list of ms per device, or a mapping profile -> ms")
        for key, ms in v.items():
            if isinstance(ms, bool) or not isinstance(ms, int | float) or not ms > 0:
                raise ValueError(f"{key}: must be a number of ms > 0, got {ms!r}")
        return {str(k): float(ms) for k, ms in v.items()}
    return _per_device(v, unit="ms", allow_zero=False)


class BudgetChange(Section):
    """From ``at_s`` on, devices have this latency budget (until a later change)."""

    at_s: float = Field(ge=0, description="simulated time of the change, s")
    latency_budget_ms: BudgetMs = Field(
        description="new budget: ms, a list per device, or profile -> ms"
    )

    @field_validator("latency_budget_ms", mode="before")
    @classmethod
    def _valid_budget(cls, v: Any) -> Any:
        return _budget_ms(v)


class Slowdown(Section):
    """Edge compute takes ``factor`` times longer from ``start_s`` to ``end_s`` (thermal
    throttling, background load) on the devices named (all when neither list is given)."""

    start_s: float = Field(0.0, ge=0, description="start, simulated s")
    end_s: float | None = Field(None, description="end, simulated s (null: to the end of the run)")
    factor: float = Field(gt=0, description="compute-time multiplier (2: twice as slow)")
    devices: list[int] | None = Field(None, description="device ids (null: any)")
    profiles: list[str] | None = Field(None, description="hardware profile names (null: any)")

    @model_validator(mode="after")
    def _ends_after_start(self) -> Slowdown:
        if self.end_s is not None and self.end_s <= self.start_s:
            raise ValueError(f"end_s {self.end_s} must be after start_s {self.start_s}")
        return self

    def applies(self, device: int, profile: str | None, now_s: float) -> bool:
        return (
            self.start_s <= now_s
            and (self.end_s is None or now_s < self.end_s)
            and (self.devices is None or device in self.devices)
            and (self.profiles is None or profile in self.profiles)
        )


class SelectionConfig(PluginSection):
    """Which model each device runs (``fixed``: edge.model everywhere; ``adaptivenet``: the best
    family member within the device's latency budget), the devices' latency budgets and their
    slowdowns. Policy parameters live in a sub-section named after it (``selection.adaptivenet.*``).

    Budgets and slowdowns describe the devices, not the policy, so one-model-for-all runs under the
    same conditions and reports the same latency figures. The budget is for one full edge batch
    (``stream.batch_size`` images), the unit a device computes in."""

    registry_at = "policies.selection:SELECTION_POLICIES"

    name: str = Field("fixed", description="selection policy (fleetsim list selection)")
    latency_budget_ms: BudgetMs | None = Field(
        None,
        description="edge compute budget per batch: ms, a list cycled over devices, or a "
        "mapping profile -> ms ('default' for the rest); null: no budget",
    )
    budget_schedule: list[BudgetChange] = Field(
        default_factory=list, description="budget changes over simulated time (at_s, budget)"
    )
    slowdown: list[Slowdown] = Field(
        default_factory=list,
        description="compute slowdowns over simulated time (start_s, end_s, factor, devices, "
        "profiles); overlapping ones multiply",
    )

    @field_validator("latency_budget_ms", mode="before")
    @classmethod
    def _valid_budget(cls, v: Any) -> Any:
        return None if v is None else _budget_ms(v)

    @property
    def active(self) -> bool:
        """Whether devices go through model selection (anything but the plain default)."""
        return bool(
            self.plugin.switches_models
            or self.latency_budget_ms is not None
            or self.budget_schedule
            or self.slowdown
        )

    def budget_s(self, device: int, profile: str | None, now_s: float) -> float | None:
        """The latency budget (s) of ``device`` at ``now_s`` (None: no budget)."""
        value = self.latency_budget_ms
        for change in sorted(self.budget_schedule, key=lambda c: c.at_s):
            if change.at_s <= now_s:
                value = change.latency_budget_ms
        if value is None:
            return None
        if isinstance(value, dict):
            ms = value.get(str(profile), value.get("default"))
            assert ms is not None  # every profile in use is covered (checked at load)
            return ms / 1000.0
        return per_device_value(value, device) / 1000.0

    def slowdown_factor(self, device: int, profile: str | None, now_s: float) -> float:
        """Product of the slowdown factors in force for ``device`` at ``now_s``."""
        factor = 1.0
        for slow in self.slowdown:
            if slow.applies(device, profile, now_s):
                factor *= slow.factor
        return factor


class Scenario(Section):
    """A whole fleetsim run: data, fleet, streams, network, edge, cloud and upload policy."""

    name: str = Field("scenario", description="scenario name (used for the default run folder)")
    description: str = Field("", description="free text")
    seed: int = Field(0, ge=0, description="seeds every random draw of the run")
    plugins: list[str] = Field(
        default_factory=list,
        description="plug-ins to import before the scenario is validated: module names, or .py "
        "files relative to the scenario file (installed packages use the fleetsim.plugins entry "
        "point instead)",
    )
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    fleet: FleetConfig = Field(default_factory=FleetConfig)
    stream: StreamConfig = Field(default_factory=StreamConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    edge: EdgeConfig = Field(default_factory=EdgeConfig)
    cloud: CloudConfig = Field(default_factory=CloudConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)

    @field_validator("name")
    @classmethod
    def _folder_name(cls, value: str) -> str:
        if not value.strip() or value.startswith(".") or any(c in value for c in "/\\\0"):
            raise ValueError(
                "should be a folder name (runs/<name> is the default run folder): not empty, "
                "not starting with . (hidden), without / or \\"
            )
        return value

    @model_validator(mode="after")
    def _stream_groups_cover_the_fleet(self) -> Scenario:
        """With ``stream.groups`` every device of the fleet is in one group, and no group names
        a device the fleet does not have."""
        groups, devices = self.stream.groups, self.fleet.devices
        if groups is None:
            return self
        errors = []
        for i, group in enumerate(groups):
            beyond = [d for d in group.devices if d >= devices]
            if beyond:
                errors.append(
                    (
                        ("stream", "groups", i, "devices"),
                        group.devices,
                        f"device {beyond[0]} does not exist: fleet.devices is {devices} "
                        f"(ids 0-{devices - 1})",
                    )
                )
        missing = set(range(devices)) - {d for g in groups for d in g.devices}
        if missing:
            errors.append(
                (
                    ("stream", "groups"),
                    [g.devices for g in groups],
                    f"device{'s' if len(missing) > 1 else ''} {_device_ranges(missing)} "
                    f"{'are' if len(missing) > 1 else 'is'} in no group: with stream.groups "
                    f"every device of the fleet (fleet.devices {devices}: ids 0-{devices - 1}) "
                    "needs one",
                )
            )
        if errors:
            raise _located_error(errors)
        return self

    def resolved(self) -> dict[str, Any]:
        """Plain dict of every value in force (defaults filled), as written to config.yaml."""
        data = self.model_dump(mode="json")
        if not data["plugins"]:  # runs without plug-ins keep the config (and hash) they had
            del data["plugins"]
        data["stream"] = self.stream.resolved(data["stream"])
        for section in plugin_sections():
            data[section] = getattr(self, section).resolved()
        return data


def plugin_sections() -> dict[str, type[PluginSection]]:
    """The scenario's plug-in sections (``cloud``, ``policy``, ...) by key, in the schema's order."""
    return {
        key: field.annotation
        for key, field in Scenario.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, PluginSection)
    }


# --------------------------------------------------------------------------------------------------
# Loading


def _validate_plugins(
    data: dict[str, Any],
) -> tuple[dict[str, dict[str, BaseModel]], list[Problem]]:
    """The validated plug-in parameters of every plug-in section of a raw scenario, by section,
    and the problems found (:meth:`PluginSection.validate_plugins`)."""
    problems: list[Problem] = []
    validated: dict[str, dict[str, BaseModel]] = {}
    for section, model_cls in plugin_sections().items():
        raw = data.get(section) or {}
        if not isinstance(raw, dict):
            continue  # the main validation reports it
        validated[section], found = model_cls.validate_plugins(section, raw)
        problems += found
    return validated, problems


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The section model a location points into, to list allowed keys for an unknown one."""
    for part in loc[:-1]:
        if isinstance(part, int):  # an item of a list of sections (``stream.groups.1``)
            continue
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        # An optional section (``OutageConfig | None``) points into its model too, and a list of
        # sections (``list[StreamGroup] | None``) into its items' model.
        candidates = [ann, *get_args(ann)]
        candidates += [item for c in candidates for item in get_args(c)]
        found = [a for a in candidates if isinstance(a, type) and issubclass(a, BaseModel)]
        if not found:
            return None
        model = found[0]
    return model


def _problems_from(
    exc: ValidationError, prefix: tuple = (), model: type[BaseModel] = Scenario
) -> list[Problem]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        path = ".".join(str(p) for p in (*prefix, *loc))
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            owner = _model_at(model, loc)
            names = list(owner.model_fields) if owner else []
            if owner is Scenario:
                names.append("sweep")  # read by fleetsim sweep before validation
            keys = ", ".join(names)
            message = "unknown key" + (f"; allowed: {keys}" if keys else "")
        elif err["type"] == "missing":
            message = "required key is missing"
        problems.append(Problem(path, err.get("input", _MISSING), message))
    return problems


def parse_override(text: str) -> tuple[str, Any]:
    """``"network.uplink_mbps=2.5"`` -> ``("network.uplink_mbps", 2.5)``; values are YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ScenarioError([Problem(text, _MISSING, "override must look like dotted.key=value")])
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ScenarioError([Problem(key, raw, f"value is not valid YAML: {exc}")]) from None
    return key, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a nested dict (a copy), creating sub-sections as needed."""
    data = copy.deepcopy(data)
    for text in overrides:
        key, value = parse_override(text)
        node = data
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise ScenarioError([Problem(key, value, f"{where} is not a section")])
            node = child
        node[parts[-1]] = value
    return data


def scenario_from_dict(
    data: dict[str, Any], overrides: list[str] | None = None, source: str = ""
) -> Scenario:
    """Validate a scenario given as a dict (plus overrides). Raises :class:`ScenarioError`."""
    if not isinstance(data, dict):
        raise ScenarioError([Problem("", data, "a scenario must be a YAML mapping")], source)
    # A ``sweep:`` section describes many runs (fleetsim sweep); a single run ignores it.
    data = apply_overrides({k: v for k, v in data.items() if k != "sweep"}, overrides or [])
    load_plugins_of(data, source)
    plugins, problems = _validate_plugins(data)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(_problems_from(exc) + problems, source) from None
    problems += _routing_problems(scenario)
    problems += _selection_problems(scenario)
    if problems:
        raise ScenarioError(problems, source)
    for section, params in plugins.items():
        getattr(scenario, section).adopt_plugins(params)
    return scenario


def load_plugins_of(data: dict[str, Any], source: str = "") -> None:
    """Import the installed plug-ins, then those a raw scenario lists in ``plugins`` (module names
    or .py files, relative to the working directory), so that validation finds what they register.

    Raises :class:`~simulator.plugins.PluginError` for an installed plug-in that fails, and
    :class:`ScenarioError` naming each listed one that fails (``plugins.0 = 'x.py': ...``).
    """
    load_entry_points()
    specs = data.get("plugins")
    if specs is None:
        return
    if not isinstance(specs, list):
        message = "must be a list of module names or .py files (relative to the scenario file)"
        raise ScenarioError([Problem("plugins", specs, message)], source)
    problems = []
    for i, spec in enumerate(specs):
        try:
            import_plugin(spec)
        except PluginError as exc:
            problems.append(Problem(f"plugins.{i}", spec, f"failed to load: {exc.reason}"))
    if problems:
        raise ScenarioError(problems, source)


def _routing_problems(scenario: Scenario) -> list[Problem]:
    """A routing policy that offloads needs the cloud foundation model to answer."""
    routing = scenario.routing.name
    if scenario.routing.plugin.offloads and scenario.cloud.teacher is None:
        return [
            Problem(
                "routing.name",
                routing,
                "offloads samples to the cloud foundation model: set cloud.teacher "
                "(or routing.name: edge_only)",
            )
        ]
    return []


def _selection_problems(scenario: Scenario) -> list[Problem]:
    """Model selection other than ``fixed`` is a zero-upload baseline on profiled devices; budgets
    per profile cover every profile in use; slowdowns name existing devices and profiles."""
    from simulator.hardware import PROFILES

    sel, problems = scenario.selection, []
    if sel.plugin.switches_models:
        why = (
            f"selection.name {sel.name!r} switches each device's model, so the cloud cannot adapt "
            "one edge state for it: it runs as a zero-upload baseline"
        )
        if scenario.cloud.plugin.adapts_edge_state:
            problems.append(
                Problem(
                    "cloud.adapter",
                    scenario.cloud.adapter,
                    f"{why}; set cloud.adapter: none (or bn_stats, edge-only)",
                )
            )
        if scenario.policy.plugin.uploads:
            problems.append(
                Problem("policy.name", scenario.policy.name, f"{why}; set policy.name: none")
            )
        if scenario.edge.profile is None:
            problems.append(
                Problem(
                    "edge.profile",
                    None,
                    f"selection.name {sel.name!r} needs hardware profiles to predict each "
                    "member's latency (fleetsim list profiles)",
                )
            )
        if sel.latency_budget_ms is None and not sel.budget_schedule:
            problems.append(
                Problem(
                    "selection.latency_budget_ms",
                    None,
                    f"selection.name {sel.name!r} needs a latency budget (ms per batch)",
                )
            )
    known = sorted(set(PROFILES) | set(scenario.edge.profiles))
    devices = scenario.fleet.devices
    in_use = {scenario.edge.profile_name(d) for d in range(min(devices, 10_000))}
    budgets = [("selection.latency_budget_ms", sel.latency_budget_ms)] + [
        (f"selection.budget_schedule.{i}.latency_budget_ms", c.latency_budget_ms)
        for i, c in enumerate(sel.budget_schedule)
    ]
    for path, value in budgets:
        if not isinstance(value, dict):
            continue
        for key in value:
            if key != "default" and key not in known:
                allowed = ", ".join(["default", *known])
                problems.append(
                    Problem(f"{path}.{key}", value[key], f"unknown profile; allowed: {allowed}")
                )
        missing = sorted(str(p) for p in in_use if str(p) not in value)
        if missing and "default" not in value:
            problems.append(
                Problem(
                    path,
                    value,
                    f"no budget for profile(s) {', '.join(missing)} (add them or 'default')",
                )
            )
    for i, slow in enumerate(sel.slowdown):
        for j, d in enumerate(slow.devices or []):
            if not 0 <= d < devices:
                problems.append(
                    Problem(
                        f"selection.slowdown.{i}.devices.{j}",
                        d,
                        f"no such device (0..{devices - 1})",
                    )
                )
        for j, name in enumerate(slow.profiles or []):
            if name not in known:
                problems.append(
                    Problem(
                        f"selection.slowdown.{i}.profiles.{j}",
                        name,
                        f"unknown profile; allowed: {', '.join(known)}",
                    )
                )
    return problems


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (which would keep the last
    silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            # merge keys (<<: *anchor) may be overridden by design; other non-scalar keys are left
            # to PyYAML, which reports them
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_scenario_yaml(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a scenario file (``name`` defaults to the file's stem); not yet validated."""
    path = Path(path)
    if path.is_dir():
        raise ScenarioError([Problem("<file>", str(path), "is a folder, not a scenario file")])
    if not path.is_file():
        raise ScenarioError([Problem("<file>", str(path), "scenario file does not exist")])
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(
            [Problem("<file>", str(path), f"is not UTF-8 text (byte {exc.start} of the file)")]
        ) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise ScenarioError([Problem("<file>", str(path), f"not valid YAML: {exc}")]) from None
    if data is None:  # nothing but blanks and comments
        raise ScenarioError([Problem("<file>", str(path), "is empty (write {} for all defaults)")])
    if not isinstance(data, dict):
        raise ScenarioError([Problem("", data, "a scenario must be a YAML mapping")], str(path))
    data.setdefault("name", path.stem)
    _rebase_paths(data, path.parent)
    if isinstance(data.get("plugins"), list):
        data["plugins"] = [_plugin_path(spec, path.parent) for spec in data["plugins"]]
    return data


#: Scenario keys naming files or folders; relative ones are read from the working directory.
PATH_KEYS = (
    ("dataset", "root"),
    ("dataset", "corrupted_root"),
    ("edge", "checkpoint"),
    ("cloud", "teacher_checkpoint"),
    ("network", "uplink_trace"),
    ("network", "downlink_trace"),
)


def rebase_path(value: Any, folder: Path) -> Any:
    """A relative path (or list of them) that does not exist from the working directory but does
    from ``folder`` (the scenario file's) is taken from there: relative to the working directory
    when below it (so the resolved config, and a sweep's config hashes, do not depend on where the
    checkout lives), else absolute. Anything else is returned as it is."""
    if isinstance(value, list):
        return [rebase_path(v, folder) for v in value]
    if not isinstance(value, str) or not value or Path(value).is_absolute():
        return value
    if Path(value).exists() or not (folder / value).exists():
        return value
    found = (folder / value).resolve()
    try:
        return str(found.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(found)


def _plugin_path(spec: Any, folder: Path) -> Any:
    """A relative ``plugins:`` file taken from ``folder`` (the scenario file's), relative to the
    working directory when below it, else absolute; module names and anything else as they are."""
    if not isinstance(spec, str) or not is_path(spec) or Path(spec).expanduser().is_absolute():
        return spec
    found = (folder / spec).resolve()
    try:
        return str(found.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(found)


def _rebase_paths(data: dict[str, Any], folder: Path) -> None:
    """:func:`rebase_path` on every :data:`PATH_KEYS` value of a scenario mapping, in place."""
    for section, key in PATH_KEYS:
        node = data.get(section)
        if isinstance(node, dict) and key in node:
            node[key] = rebase_path(node[key], folder)


def load_scenario(path: str | Path, overrides: list[str] | None = None) -> Scenario:
    """Read and validate a scenario YAML. Raises :class:`ScenarioError` for any bad input."""
    return scenario_from_dict(read_scenario_yaml(path), overrides, source=str(path))


def dump_scenario(scenario: Scenario) -> str:
    """The resolved scenario as YAML text (re-loadable with :func:`load_scenario`)."""
    return yaml.safe_dump(scenario.resolved(), sort_keys=False)
