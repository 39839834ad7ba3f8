"""Model zoo: names -> ``nn.Module`` with weights, in the manner of timm's ``create_model``.

Every model takes float NCHW input in [0, 1] and carries its own input normalisation as its first
module (``model.normalize``, then ``model.net``), so the simulator never normalises. Architectures
are registered in ``MODELS``; where the weights come from is kept apart in each model's card.

- ``resnet20/32/44/56``: CIFAR-10 ResNets of He et al. 2016 with the akamaster/pytorch_resnet_cifar10
  weights (BSD-2-Clause), ImageNet mean/std normalisation as in their training code.
  ``resnet20``'s file ships in ``simulator/models/weights`` (unchanged, with the licence in
  ``LICENSE-akamaster.txt``); the others are read from local folders or downloaded.
- ``synthetic_edge`` / ``synthetic_teacher``: trained on the ``synthetic`` dataset by
  ``simulator.models.train.build_zoo``; weights ship in ``simulator/models/weights``.
- ``timm:<name>[.<tag>]``: any timm architecture, random init plus an optional local checkpoint,
  or with ``pretrained=True`` timm's published weights from a local file or the user's Hugging Face /
  torch hub cache (``find_timm_weights``), normalised with those weights' mean/std.
- ``<edge model>-w<b>a<b>-<method>``: ``resnet20`` or ``synthetic_edge`` fake-quantized to 8 or 4
  bits (``simulator.models.quant``) by data-free GDFQ or min-max calibration on noise; the
  checkpoint is built locally by ``fleetsim zoo quantize`` (``simulator.models.gdfq``).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from simulator.models.cifar_resnet import cifar_resnet
from simulator.models.quant import QUANT_BITS, QUANT_METHODS, model_nbytes, quantize_model
from simulator.registry import Registry

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MODELS",
    "ModelCard",
    "ModelError",
    "Normalize",
    "NormalizedModel",
    "check_model_name",
    "create_model",
    "find_timm_weights",
    "list_models",
    "load_checkpoint",
    "model_cache_dir",
    "model_info",
    "quantized_model_name",
    "weights_dir",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SYNTHETIC_MEAN = (0.5, 0.5, 0.5)
SYNTHETIC_STD = (0.25, 0.25, 0.25)
TIMM_PREFIX = "timm:"
AKAMASTER_URL = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/"


class ModelError(ValueError):
    """An unknown model name or weights that cannot be found or loaded; says what is allowed."""


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` on NCHW input in [0, 1]."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class NormalizedModel(nn.Sequential):
    """``normalize`` then ``net``; BN layers are named ``net.<akamaster name>``."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__(OrderedDict(normalize=Normalize(mean, std), net=net))


@dataclass(frozen=True)
class ModelCard:
    """What a name means: how to build it and where its pretrained weights live."""

    name: str
    build: Callable[[int], nn.Module]
    dataset: str
    description: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights_file: str | None = None  # file name of the pretrained weights
    weights_url: str | None = None  # where to download them (None: shipped with the package)
    weights_sha256_prefix: str | None = None
    build_command: str | None = None  # weights built locally by this command (not shipped)


MODELS: Registry = Registry("model")
_CARDS: dict[str, ModelCard] = {}


def _register(card: ModelCard) -> None:
    def build(num_classes: int = 10) -> nn.Module:
        return card.build(num_classes)

    build.__doc__ = card.description
    build.__name__ = card.name
    MODELS.register(card.name)(build)
    _CARDS[card.name] = card


for _depth, _file, _acc in (
    (20, "resnet20-12fca82f.th", 91.73),
    (32, "resnet32-d509ac18.th", 92.63),
    (44, "resnet44-014dd654.th", 93.10),
    (56, "resnet56-4bfd9763.th", 93.39),
):
    _register(
        ModelCard(
            name=f"resnet{_depth}",
            build=lambda k, d=_depth: cifar_resnet(d, num_classes=k),
            dataset="cifar10",
            description=(
                f"CIFAR ResNet-{_depth} (He et al. 2016, option-A shortcuts), CIFAR-10 pretrained "
                f"(akamaster, {_acc:.2f}% test accuracy reported)"
            ),
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            weights_file=_file,
            weights_url=AKAMASTER_URL + _file,
            weights_sha256_prefix=_file.split("-")[1].split(".")[0],
        )
    )

_register(
    ModelCard(
        name="synthetic_edge",
        build=lambda k: cifar_resnet(8, num_classes=k, width=16),
        dataset="synthetic",
        description="ResNet-8 (width 16) trained clean on the synthetic dataset; the edge model",
        mean=SYNTHETIC_MEAN,
        std=SYNTHETIC_STD,
        weights_file="synthetic_edge.pt",
    )
)
_register(
    ModelCard(
        name="synthetic_teacher",
        build=lambda k: cifar_resnet(14, num_classes=k, width=16),
        dataset="synthetic",
        description=(
            "ResNet-14 (width 16) trained on the synthetic dataset with noise/blur/contrast/"
            "pixelate/JPEG-like augmentation; the corruption-robust cloud teacher"
        ),
        mean=SYNTHETIC_MEAN,
        std=SYNTHETIC_STD,
        weights_file="synthetic_teacher.pt",
    )
)

_register(
    ModelCard(
        name="resnet56-augmix",
        build=lambda k: cifar_resnet(56, num_classes=k),
        dataset="cifar10",
        description=(
            "CIFAR ResNet-56 (akamaster weights) fine-tuned with AugMix-style augmentation on the "
            "JPEG-derived CIFAR-10 training set; the corruption-robust CIFAR-10 cloud teacher"
        ),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        weights_file="resnet56-augmix.pt",
        build_command="fleetsim zoo build --name resnet56-augmix",
    )
)


QUANTIZABLE_MODELS = ("resnet20", "synthetic_edge")


def quantized_model_name(base: str, bits: int, method: str) -> str:
    """Zoo name of ``base`` quantized to ``bits`` (weights and activations) by ``method``."""
    if base not in QUANTIZABLE_MODELS:
        raise ModelError(f"cannot quantize {base!r}; quantizable: {', '.join(QUANTIZABLE_MODELS)}")
    if bits not in QUANT_BITS:
        raise ModelError(f"bits must be one of {', '.join(map(str, QUANT_BITS))}, got {bits}")
    if method not in QUANT_METHODS:
        raise ModelError(f"unknown method {method!r}; allowed: {', '.join(QUANT_METHODS)}")
    return f"{base}-w{bits}a{bits}-{method}"


for _base in QUANTIZABLE_MODELS:
    for _bits in QUANT_BITS:
        for _method in QUANT_METHODS:
            _base_card = _CARDS[_base]
            _name = quantized_model_name(_base, _bits, _method)
            _register(
                ModelCard(
                    name=_name,
                    build=lambda k, c=_base_card, b=_bits: quantize_model(c.build(k), b, b),
                    dataset=_base_card.dataset,
                    description=(
                        f"{_base} fake-quantized W{_bits}A{_bits} (weights per channel, "
                        f"activations per tensor, BN in float) by "
                        + ("data-free GDFQ" if _method == "gdfq" else "min-max on noise")
                    ),
                    mean=_base_card.mean,
                    std=_base_card.std,
                    weights_file=f"{_name}.pt",
                    build_command=f"fleetsim zoo quantize --model {_base} --bits {_bits} "
                    f"--method {_method}",
                )
            )


def weights_dir() -> Path:
    """Folder of the weights shipped with the package (``simulator/models/weights``)."""
    return Path(__file__).resolve().parent / "weights"


def list_models() -> list[str]:
    """Registered names; ``timm:<name>`` is accepted as well for any timm architecture."""
    return MODELS.names()


def _timm_known(name: str) -> bool:
    import timm

    return bool(timm.is_model(name))


def check_model_name(name: str) -> None:
    """Raise ``ModelError`` unless ``name`` is registered or ``timm:<name>`` timm knows."""
    if name in MODELS:
        return
    if name.startswith(TIMM_PREFIX):
        arch = name[len(TIMM_PREFIX) :]
        if arch and _timm_known(arch):
            return
        raise ModelError(
            f"unknown timm model {arch!r} in {name!r}; see timm.list_models() for allowed names"
        )
    allowed = ", ".join(list_models())
    raise ModelError(f"unknown model {name!r}; allowed: {allowed}, or timm:<timm model name>")


def _search_dirs() -> list[Path]:
    """Where CIFAR checkpoints are looked up: $FLEETSIM_MODELS, the shared developer folder
    (../shared/models/cifar10 from the cwd and from the repository root), the cache."""
    dirs: list[Path] = []
    if os.environ.get("FLEETSIM_MODELS"):
        dirs.append(Path(os.environ["FLEETSIM_MODELS"]).expanduser())
    repo_root = Path(__file__).resolve().parents[2]
    for base in (Path.cwd(), repo_root):
        dirs.append((base / ".." / "shared" / "models" / "cifar10").resolve())
    dirs.append(model_cache_dir())
    return list(dict.fromkeys(dirs))


def _with_package_dir(dirs: list[Path]) -> list[Path]:
    """``dirs`` with the package's weights folder after ``$FLEETSIM_MODELS`` (which stays first,
    so a user's file wins) and before the shared folders and the cache."""
    env = os.environ.get("FLEETSIM_MODELS")
    first = Path(env).expanduser() if env else None
    head = [d for d in dirs[:1] if d == first]
    return list(dict.fromkeys([*head, weights_dir(), *dirs[len(head) :]]))


def model_cache_dir() -> Path:
    """Where downloaded and locally built (quantized) weights go: ``~/.cache/fleetsim/models``."""
    return Path.home() / ".cache" / "fleetsim" / "models"


def _pretrained_path(card: ModelCard) -> Path:
    assert card.weights_file is not None
    if card.build_command is not None:  # built locally (or shipped): package, $FLEETSIM_MODELS, ...
        dirs = [weights_dir(), *_search_dirs()]
        for folder in dirs:
            if (folder / card.weights_file).is_file():
                return folder / card.weights_file
        raise ModelError(
            f"weights {card.weights_file} for {card.name!r} not found in "
            f"{', '.join(str(d) for d in dirs)}; build them with `{card.build_command}`"
        )
    if card.weights_url is None:
        path = weights_dir() / card.weights_file
        if not path.is_file():
            raise ModelError(
                f"shipped weights {path} for {card.name!r} are missing; rebuild them with "
                "`fleetsim zoo build` or pass checkpoint=<file>"
            )
        return path
    searched = _search_dirs()
    dirs = _with_package_dir(searched)
    for folder in dirs:
        if (folder / card.weights_file).is_file():
            return folder / card.weights_file
    cache = searched[-1]
    target = cache / card.weights_file
    try:
        cache.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(
            card.weights_url, str(target), hash_prefix=card.weights_sha256_prefix, progress=True
        )
    except Exception as exc:  # no network, HTTP error, hash mismatch
        where = ", ".join(str(d) for d in dirs)
        raise ModelError(
            f"weights {card.weights_file} for {card.name!r} not found in {where} and the "
            f"download from {card.weights_url} failed ({exc}). Place the file in one of those "
            "folders or set FLEETSIM_MODELS to its folder."
        ) from exc
    return target


def _state_dict_from(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(
            f"{path} holds no state_dict (a dict of tensors, or {{'state_dict': ...}})"
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_checkpoint(model: NormalizedModel, path: str | Path) -> None:
    """Load a checkpoint (torch pickle, or ``.safetensors``) of the whole wrapped model (keys
    ``net.*``) or of the bare network."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        raw: object = load_file(str(path), device="cpu")
    else:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    state = _state_dict_from(raw, path)
    target: nn.Module = model if any(k.startswith("net.") for k in state) else model.net
    try:
        target.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as exc:
        raise ModelError(f"checkpoint {path} does not fit the model: {exc}") from exc


def create_model(
    name: str,
    *,
    num_classes: int = 10,
    checkpoint: str | Path | None = None,
    pretrained: bool | None = None,
) -> nn.Module:
    """Build ``name`` in eval mode, input in [0, 1]; ``checkpoint`` overrides any pretrained weights.

    ``pretrained``: None is the name's default (zoo models pretrained, ``timm:`` models random
    init, ImageNet mean/std). ``True`` on a ``timm:`` model loads timm's published weights, from
    ``checkpoint`` when given, else from the local caches (see :func:`find_timm_weights`), with
    their own input mean/std; their classifier must have ``num_classes`` outputs.
    """
    check_model_name(name)
    if name.startswith(TIMM_PREFIX) and pretrained:
        return _timm_pretrained(name[len(TIMM_PREFIX) :], num_classes, checkpoint).eval()
    if name.startswith(TIMM_PREFIX):
        import timm

        net = timm.create_model(name[len(TIMM_PREFIX) :], pretrained=False, num_classes=num_classes)
        model = NormalizedModel(net, IMAGENET_MEAN, IMAGENET_STD)
    elif name not in _CARDS:  # a plug-in's architecture: random init, or ``checkpoint``
        model = _plugin_model(name, num_classes)
    else:
        card = _CARDS[name]
        model = NormalizedModel(MODELS.create(name, num_classes), card.mean, card.std)
        if pretrained is not False and checkpoint is None and card.weights_file is not None:
            if num_classes != 10:
                raise ModelError(
                    f"pretrained {name!r} has 10 classes, not {num_classes}; pass "
                    "pretrained=False or a checkpoint"
                )
            load_checkpoint(model, _pretrained_path(card))
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model.eval()


def _plugin_model(name: str, num_classes: int) -> NormalizedModel:
    """A model a plug-in registered without a card: ``MODELS.register("my_net")`` on an
    ``nn.Module`` class (or function) taking ``num_classes``; the input normalisation is its
    ``mean`` and ``std`` attributes (ImageNet's by default)."""
    build = MODELS.get(name)
    mean = tuple(getattr(build, "mean", IMAGENET_MEAN))
    std = tuple(getattr(build, "std", IMAGENET_STD))
    return NormalizedModel(build(num_classes), mean, std)


def trained_on(name: str) -> str | None:
    """The dataset a zoo model's weights were trained on (None for timm and unknown names; a
    plug-in's ``dataset`` attribute)."""
    card = _CARDS.get(name)
    if card is None:
        return getattr(MODELS.get(name), "dataset", None) if name in MODELS else None
    return card.dataset


def weights_status(name: str) -> str:
    """Where a zoo model's weights are on this machine, in a few words: ``shipped``, ``found in
    DIR``, ``missing: COMMAND`` (built locally), or ``downloaded on first use``."""
    card = _CARDS.get(name)
    if card is None and name in MODELS:
        return "none (a plug-in's model: random init, or a checkpoint)"
    if card is None or card.weights_file is None:
        return "none (timm: checkpoint or pretrained)"
    if card.build_command is not None:
        dirs = [weights_dir(), *_search_dirs()]
    elif card.weights_url is None:
        dirs = [weights_dir()]
    else:
        dirs = _with_package_dir(_search_dirs())
    for folder in dirs:
        if (folder / card.weights_file).is_file():
            return "shipped" if folder == weights_dir() else f"found in {folder}"
    if card.build_command is not None:
        return f"missing: {card.build_command}"
    if card.weights_url is None:
        return "missing: fleetsim zoo build"
    return "downloaded on first use"


def model_info(name: str) -> dict:
    """Dataset, parameter count, description and weights source of ``name``."""
    check_model_name(name)
    if name.startswith(TIMM_PREFIX):
        model = create_model(name, pretrained=False)
        return {
            "name": name,
            "dataset": "any (ImageNet normalisation)",
            "params": sum(p.numel() for p in model.parameters()),
            "description": f"timm architecture {name[len(TIMM_PREFIX) :]!r}, random init",
            "weights": "none (pass checkpoint=), or timm's published weights with pretrained: "
            "true (local file, Hugging Face / torch hub cache, else downloaded)",
        }
    if name not in _CARDS:  # a plug-in's architecture
        net = _plugin_model(name, 10).net
        return {
            "name": name,
            "dataset": trained_on(name) or "any",
            "params": sum(p.numel() for p in net.parameters()),
            "size_bytes": model_nbytes(net),
            "description": MODELS.describe(name),
            "weights": f"none (random init; pass a checkpoint), from {MODELS.source(name)}",
        }
    card = _CARDS[name]
    net = MODELS.create(name, 10)
    if card.build_command is not None:
        weights = f"{card.weights_file} (local folders, built by `{card.build_command}`)"
    elif card.weights_url is None:
        weights = f"shipped: {weights_dir() / str(card.weights_file)}"
    elif (weights_dir() / str(card.weights_file)).is_file():
        weights = (
            f"shipped: {weights_dir() / str(card.weights_file)} (akamaster, BSD-2-Clause, "
            "LICENSE-akamaster.txt; $FLEETSIM_MODELS overrides)"
        )
    else:
        weights = f"{card.weights_file} (local folders, else {card.weights_url})"
    return {
        "name": name,
        "dataset": card.dataset,
        "params": sum(p.numel() for p in net.parameters()),
        "size_bytes": model_nbytes(net),
        "description": card.description,
        "weights": weights,
    }


# --------------------------------------------------------------------------------------------------
# timm's published weights, found offline


def _timm_pretrained_cfg(arch: str):
    """timm's pretrained config of ``arch`` (``<name>`` takes its default tag, or ``<name>.<tag>``)."""
    import timm
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(arch)
    except (RuntimeError, KeyError, ValueError):
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        tags = timm.list_pretrained(arch.split(".")[0] + ".*")
        raise ModelError(
            f"timm has no published weights for {arch!r}; pretrained tags: "
            f"{', '.join(tags) or 'none'} (or pass a checkpoint without pretrained)"
        )
    return cfg


def _hf_hub_cache() -> Path:
    """The Hugging Face hub cache, resolved from the environment now (as huggingface_hub does)."""
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(key):
            return Path(os.environ[key]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return xdg.expanduser() / "huggingface" / "hub"


_HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # timm's order on the hub


def find_timm_weights(arch: str) -> tuple[Path | None, list[str]]:
    """Where timm's published weights of ``arch`` already are on this machine, without network.

    Looks in the Hugging Face hub cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
    ``~/.cache/huggingface/hub``: ``models--timm--<name>.<tag>/snapshots/<rev>/model.safetensors``,
    the revision ``refs/main`` names first) and in torch hub's ``checkpoints/`` folder (timm's older
    URL weights). Returns the file (or None) and the places searched, for error messages.
    """
    cfg = _timm_pretrained_cfg(arch)
    searched: list[str] = []
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        cache = _hf_hub_cache()
        repo = cache / ("models--" + cfg.hf_hub_id.replace("/", "--"))
        searched.append(str(repo / "snapshots" / "*" / "model.safetensors"))
        for filename in _HF_WEIGHT_FILES:
            found = try_to_load_from_cache(cfg.hf_hub_id, filename, cache_dir=cache)
            if isinstance(found, str):
                return Path(found), searched
        for filename in _HF_WEIGHT_FILES:  # snapshots without refs/main: the newest one
            files = sorted(repo.glob(f"snapshots/*/{filename}"), key=lambda p: p.stat().st_mtime)
            if files:
                return files[-1], searched
    if cfg.url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url)
        searched.append(str(path))
        if path.is_file():
            return path, searched
    return None, searched


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _download_timm_weights(arch: str, searched: list[str]) -> Path:
    """Fetch the weights into the caches with the hubs' own clients; a ModelError on failure."""
    cfg = _timm_pretrained_cfg(arch)
    hint = (
        f"timm:{arch} pretrained weights not found in {', '.join(searched)}"
        + (" and HF_HUB_OFFLINE is set" if _offline() else "")
        + ". Put timm's weights file there (e.g. by `timm.create_model(name, pretrained=True)` on "
        "a machine with a network, copying its cache), or pass the file as edge.checkpoint / "
        "cloud.teacher_checkpoint"
    )
    if _offline():
        raise ModelError(hint)
    try:
        if cfg.hf_hub_id:
            from huggingface_hub import hf_hub_download

            return Path(
                hf_hub_download(cfg.hf_hub_id, _HF_WEIGHT_FILES[0], cache_dir=_hf_hub_cache())
            )
        target = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url)
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(cfg.url, str(target), progress=True)
        return target
    except Exception as exc:  # no network, HTTP error, missing file on the hub
        raise ModelError(f"{hint}; the download failed ({exc})") from exc


def _timm_pretrained(arch: str, num_classes: int, file: str | Path | None) -> NormalizedModel:
    """timm ``arch`` with published weights from ``file`` or the caches, loaded by timm's own
    loader (strictly: a classifier of another size is an error, never silently re-initialised)."""
    import timm

    cfg = _timm_pretrained_cfg(arch)
    if file is not None:
        path = Path(file).expanduser()
        if not path.is_file():
            raise ModelError(f"pretrained weights file {path} for timm:{arch} does not exist")
    else:
        found, searched = find_timm_weights(arch)
        path = found if found is not None else _download_timm_weights(arch, searched)
    try:
        net = timm.create_model(
            arch,
            pretrained=True,
            num_classes=num_classes,
            pretrained_cfg_overlay={"file": str(path), "num_classes": num_classes},
        )
    except RuntimeError as exc:
        raise ModelError(
            f"pretrained weights {path} do not fit timm:{arch} with {num_classes} classes (the "
            f"dataset's class count; timm's weights have {cfg.num_classes}): {str(exc)[:300]}"
        ) from exc
    mean = tuple(net.pretrained_cfg.get("mean") or IMAGENET_MEAN)
    std = tuple(net.pretrained_cfg.get("std") or IMAGENET_STD)
    return NormalizedModel(net, mean, std)
