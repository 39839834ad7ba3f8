"""Data-free low-bit quantization with a label-conditional generator: GDFQ (Xu et al., ECCV 2020).

No real image is used. Two stages:

1. **Generator.** ``ConditionalGenerator`` maps noise ``z`` and a class label ``y`` to an image in
   the model's normalised input space (the GDFQ CIFAR generator: label embedding times ``z``, a
   linear layer to an 8x8 map, two nearest-neighbour upsamplings with conv-BN-LeakyReLU, tanh and
   a final affine-free BN). It is trained against the frozen full-precision model with
   ``CE(f(G(z, y)), y) + bns_weight * L_BNS``, where ``L_BNS`` is the mean over all BN layers of
   ``||mu_batch - mu_running||^2 + ||var_batch - var_running||^2`` (per-channel MSE), i.e. the
   generated images must be classified as their label and reproduce the statistics that the BN
   layers stored from the (unseen) training data.
2. **Distillation.** The quantized model (``simulator.models.quant``, weights per channel,
   activations per tensor) first observes its activation ranges on generated batches (GDFQ's
   bias-corrected EMA during its warm-up epochs), then is fine-tuned on freshly generated batches
   with ``T^2 * KL(softmax(t/T) || softmax(s/T)) + CE(s, y)`` (GDFQ: T = 20, alpha = 1), SGD with
   Nesterov momentum. Both models stay in eval mode, so the BN running statistics of the
   quantized model remain those of the full-precision model (as in GDFQ); every parameter,
   BN affine included, is fine-tuned through the straight-through estimator.

Differences from the paper (CPU budget, minutes instead of 400 epochs x 200 iterations of batch
200 on a GPU): the two stages run one after the other instead of alternating every iteration
(the generator is frozen during distillation, which samples fresh batches from it), the generator
is narrower (``generator_width`` 64 instead of 128), there are hundreds instead of 80,000
iterations, the student learning rate (GDFQ's 1e-4) decays by a cosine instead of in steps, and
the generator's BN epsilon is PyTorch's default (GDFQ's code passes 0.8 as BN's ``eps``).

Everything is deterministic for a seed (seeded generators, fixed thread count, deterministic
kernels).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from simulator.models.quant import (
    calibrate_activations,
    observe_activations,
    quantize_model,
    random_noise_images,
)
from simulator.models.train import TRAIN_THREADS, _deterministic, _progress

__all__ = [
    "BNStatisticsLoss",
    "ConditionalGenerator",
    "GDFQConfig",
    "build_quantized",
    "distill_quantized",
    "gdfq_quantize",
    "kd_loss",
    "train_generator",
]


@dataclass(frozen=True)
class GDFQConfig:
    """Hyper-parameters of both stages; the defaults take a few minutes for ResNet-20 on 2 cores.

    GDFQ's values where they differ: batch 200, generator width 128, 80,000 joint iterations
    (the first 800 only calibrating the activation ranges), multi-step learning-rate decay."""

    latent_dim: int = 100
    generator_width: int = 64
    batch_size: int = 32
    generator_iters: int = 60
    generator_lr: float = 1e-3
    generator_betas: tuple[float, float] = (0.5, 0.999)
    bns_weight: float = 0.1
    calibration_batches: int = 10
    distill_iters: int = 40
    student_lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 1e-4
    temperature: float = 20.0
    kd_weight: float = 1.0
    seed: int = 0
    threads: int = TRAIN_THREADS

    def __post_init__(self) -> None:
        for name in ("latent_dim", "generator_width", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("generator_iters", "calibration_batches", "distill_iters"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


class ConditionalGenerator(nn.Module):
    """``G(z, y)``: a label-conditional image generator (GDFQ's CIFAR architecture, with its
    width a parameter). Output: float NCHW in the classifier's normalised input space."""

    def __init__(
        self,
        num_classes: int,
        latent_dim: int = 100,
        width: int = 128,
        image_size: int = 32,
        channels: int = 3,
    ):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4, got {image_size}")
        self.num_classes, self.latent_dim = num_classes, latent_dim
        self.init_size = image_size // 4
        self.label_embedding = nn.Embedding(num_classes, latent_dim)
        self.project = nn.Linear(latent_dim, width * self.init_size**2)
        self.width = width
        self.bn0 = nn.BatchNorm2d(width)
        self.block1 = nn.Sequential(
            nn.Conv2d(width, width, 3, 1, 1), nn.BatchNorm2d(width), nn.LeakyReLU(0.2)
        )
        self.block2 = nn.Sequential(
            nn.Conv2d(width, width // 2, 3, 1, 1),
            nn.BatchNorm2d(width // 2),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width // 2, channels, 3, 1, 1),
            nn.Tanh(),
            nn.BatchNorm2d(channels, affine=False),
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.project(self.label_embedding(labels) * z)
        h = self.bn0(h.view(len(z), self.width, self.init_size, self.init_size))
        h = self.block1(F.interpolate(h, scale_factor=2))
        return self.block2(F.interpolate(h, scale_factor=2))

    def sample(
        self, n: int, gen: torch.Generator, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` images with uniformly drawn labels (or the given ones); returns (images, labels)."""
        if labels is None:
            labels = torch.randint(0, self.num_classes, (n,), generator=gen)
        z = torch.randn(n, self.latent_dim, generator=gen)
        return self(z, labels), labels


class BNStatisticsLoss:
    """Records, on each forward pass of ``model``, the batch mean and (biased) variance at the
    input of every BN layer; ``value()`` is the mean over layers of the per-channel MSE to that
    layer's running mean and variance (GDFQ's BNS loss). Use as a context manager."""

    def __init__(self, model: nn.Module):
        self.layers = [m for m in model.modules() if isinstance(m, _BatchNorm)]
        if not self.layers:
            raise ValueError("the model has no BatchNorm layer to match statistics against")
        self._terms: list[torch.Tensor] = []
        self._handles: list[Any] = []

    def _hook(self, module: _BatchNorm, inputs: tuple[torch.Tensor, ...], _: object) -> None:
        x = inputs[0]
        dims = [0, *range(2, x.dim())]
        mean, var = x.mean(dims), x.var(dims, unbiased=False)
        self._terms.append(
            F.mse_loss(mean, module.running_mean) + F.mse_loss(var, module.running_var)
        )

    def __enter__(self) -> BNStatisticsLoss:
        self._handles = [m.register_forward_hook(self._hook) for m in self.layers]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def reset(self) -> None:
        self._terms = []

    def value(self) -> torch.Tensor:
        if not self._terms:
            raise RuntimeError("no forward pass recorded since the last reset()")
        return torch.stack(self._terms).mean()


def _ends(values: list[float], k: int = 10) -> dict[str, float]:
    """Mean of the first and of the last ``k`` values of a training history."""
    if not values:
        return {}
    head, tail = values[:k], values[-k:]
    return {"first": sum(head) / len(head), "last": sum(tail) / len(tail)}


def _body(model: nn.Module) -> nn.Module:
    """The network behind the input normalisation (generated images are already normalised)."""
    return model.net if hasattr(model, "net") and hasattr(model, "normalize") else model


def train_generator(
    teacher: nn.Module,
    num_classes: int,
    config: GDFQConfig | None = None,
    *,
    image_size: int = 32,
    progress: bool = False,
) -> tuple[ConditionalGenerator, dict[str, list[float]]]:
    """Stage 1: train a ``ConditionalGenerator`` against the frozen full-precision ``teacher``.

    Returns the generator and its per-iteration history: ``ce``, ``bns`` and ``teacher_accuracy``
    (how often the teacher classifies a generated image as its conditioning label)."""
    config = config or GDFQConfig()
    history: dict[str, list[float]] = {"ce": [], "bns": [], "teacher_accuracy": []}
    body = _body(teacher).eval()
    frozen = [(p, p.requires_grad) for p in body.parameters()]
    with _deterministic(config.threads):
        torch.manual_seed(config.seed)
        gen = torch.Generator().manual_seed(config.seed)
        generator = ConditionalGenerator(
            num_classes, config.latent_dim, config.generator_width, image_size
        ).train()
        optimizer = torch.optim.Adam(
            generator.parameters(), lr=config.generator_lr, betas=config.generator_betas
        )
        for p, _ in frozen:
            p.requires_grad_(False)
        try:
            with BNStatisticsLoss(body) as bns, _progress(progress) as bar:
                task = bar.add_task("GDFQ generator", total=config.generator_iters, info="")
                for _ in range(config.generator_iters):
                    images, labels = generator.sample(config.batch_size, gen)
                    bns.reset()
                    logits = body(images)
                    ce = F.cross_entropy(logits, labels)
                    bns_loss = bns.value()
                    loss = ce + config.bns_weight * bns_loss
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    history["ce"].append(float(ce.detach()))
                    history["bns"].append(float(bns_loss.detach()))
                    accuracy = float((logits.argmax(1) == labels).float().mean())
                    history["teacher_accuracy"].append(accuracy)
                    bar.update(
                        task,
                        advance=1,
                        info=f"ce={history['ce'][-1]:.3f} bns={history['bns'][-1]:.3f}",
                    )
        finally:
            for p, requires_grad in frozen:
                p.requires_grad_(requires_grad)
    return generator, history


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 20.0,
    kd_weight: float = 1.0,
) -> torch.Tensor:
    """GDFQ's student loss: ``kd_weight * T^2 * KL(p_t^T || p_s^T) + CE(s, y)``, with the KL
    averaged over every element as PyTorch's default ``KLDivLoss`` did in the GDFQ code."""
    t = temperature
    log_p_s, p_t = F.log_softmax(student_logits / t, 1), F.softmax(teacher_logits / t, 1)
    kl = F.kl_div(log_p_s, p_t, reduction="sum") / student_logits.numel()
    return kd_weight * t * t * kl + F.cross_entropy(student_logits, labels)


def distill_quantized(
    student: nn.Module,
    teacher: nn.Module,
    generator: ConditionalGenerator,
    config: GDFQConfig | None = None,
    *,
    progress: bool = False,
) -> dict[str, list[float]]:
    """Stage 2: calibrate the activation ranges of the quantized ``student`` on generated batches
    (EMA), then fine-tune it in place by distillation from ``teacher`` on generated batches.

    Both models run in eval mode (BN running statistics untouched). Returns the history ``loss``
    and ``agreement`` (student top-1 equal to the teacher's) per distillation iteration."""
    config = config or GDFQConfig()
    history: dict[str, list[float]] = {"loss": [], "agreement": []}
    s_body, t_body = _body(student), _body(teacher).eval()
    with _deterministic(config.threads):
        torch.manual_seed(config.seed + 1)
        gen = torch.Generator().manual_seed(config.seed + 1)
        generator.train()  # GDFQ samples with the generator's batch statistics
        for p in generator.parameters():
            p.requires_grad_(False)
        student.eval()
        with torch.no_grad(), observe_activations(s_body, "ema"):
            for _ in range(config.calibration_batches):
                s_body(generator.sample(config.batch_size, gen)[0])
        if config.distill_iters == 0:
            return history
        student.requires_grad_(True)
        decay = [p for p in student.parameters() if p.ndim > 1]
        no_decay = [p for p in student.parameters() if p.ndim <= 1]
        optimizer = torch.optim.SGD(
            [
                {"params": decay, "weight_decay": config.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=config.student_lr,
            momentum=config.momentum,
            nesterov=True,
        )
        steps = config.distill_iters
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda i: 0.5 * (1 + math.cos(math.pi * i / steps))
        )
        with _progress(progress) as bar:
            task = bar.add_task("GDFQ distillation", total=steps, info="")
            for _ in range(steps):
                with torch.no_grad():
                    images, labels = generator.sample(config.batch_size, gen)
                    teacher_logits = t_body(images)
                student_logits = s_body(images)
                loss = kd_loss(
                    student_logits, teacher_logits, labels, config.temperature, config.kd_weight
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                agree = float((student_logits.argmax(1) == teacher_logits.argmax(1)).float().mean())
                history["loss"].append(float(loss.detach()))
                history["agreement"].append(agree)
                bar.update(
                    task, advance=1, info=f"loss={history['loss'][-1]:.3f} agree={agree:.2f}"
                )
        student.requires_grad_(False)
    return history


def gdfq_quantize(
    model: nn.Module,
    w_bits: int,
    a_bits: int,
    num_classes: int,
    config: GDFQConfig | None = None,
    *,
    image_size: int = 32,
    generator: ConditionalGenerator | None = None,
    progress: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """Quantize the full-precision ``model`` to ``w_bits``/``a_bits`` without data (GDFQ).

    ``generator``: an already trained generator for ``model`` (stage 1 is then skipped, e.g. to
    share one generator between bit widths). Returns the quantized model (eval mode, frozen) and
    a report: the config, the stage histories' first and last values, the stages' wall times."""
    config = config or GDFQConfig()
    start = time.perf_counter()
    g_hist: dict[str, list[float]] = {}
    if generator is None:
        generator, g_hist = train_generator(
            model, num_classes, config, image_size=image_size, progress=progress
        )
    generator_s = time.perf_counter() - start
    student = quantize_model(model, w_bits, a_bits).eval()
    d_hist = distill_quantized(student, model, generator, config, progress=progress)

    report = {
        "config": asdict(config),
        "generator": {k: _ends(v) for k, v in g_hist.items()},
        "distillation": {k: _ends(v) for k, v in d_hist.items()},
        "generator_wall_s": generator_s,
        "distill_wall_s": time.perf_counter() - start - generator_s,
    }
    return student.eval(), report


def build_quantized(
    base: str,
    bits: int,
    method: str,
    out: str | Path | None = None,
    *,
    config: GDFQConfig | None = None,
    generator_path: str | Path | None = None,
    noise_images: int = 256,
    progress: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """Quantize the zoo model ``base`` to W``bits``A``bits`` by ``method`` and save it as the
    checkpoint of the zoo name ``<base>-w<bits>a<bits>-<method>``.

    ``method``: ``"gdfq"`` (this module) or ``"minmax"`` (min-max activation ranges over
    ``noise_images`` uniform-noise images, seed ``config.seed``: the naive data-free baseline).
    ``out``: a file, or a folder that receives ``<name>.pt`` (default: the zoo's model cache,
    where ``create_model(name)`` finds it). ``generator_path``: a GDFQ generator file, loaded when
    it exists (stage 1 skipped, e.g. for the second bit width) and written after training when it
    does not; it must come from the same ``base`` and generator settings. Returns the quantized model and a report (also stored
    in the checkpoint under ``"quantization"``)."""
    from simulator.models.zoo import create_model, model_cache_dir, quantized_model_name

    name = quantized_model_name(base, bits, method)
    config = config or GDFQConfig()
    target = Path(out) if out is not None else model_cache_dir()
    if target.suffix != ".pt":
        target = target / f"{name}.pt"
    start = time.perf_counter()
    model = create_model(base)
    num_classes = model.net.linear.out_features
    if method == "gdfq":
        generator, g_report = None, {}
        if generator_path is not None and Path(generator_path).is_file():
            generator = ConditionalGenerator(num_classes, config.latent_dim, config.generator_width)
            generator.load_state_dict(torch.load(generator_path, weights_only=True))
            g_report = {"generator_loaded_from": str(generator_path)}
        else:
            g_start = time.perf_counter()
            generator, g_hist = train_generator(model, num_classes, config, progress=progress)
            g_report = {
                "generator": {k: _ends(v) for k, v in g_hist.items()},
                "generator_wall_s": time.perf_counter() - g_start,
            }
            if generator_path is not None:
                Path(generator_path).parent.mkdir(parents=True, exist_ok=True)
                torch.save(generator.state_dict(), generator_path)
        quantized, report = gdfq_quantize(
            model, bits, bits, num_classes, config, generator=generator, progress=progress
        )
        report.update(g_report)
    else:
        quantized = quantize_model(model, bits, bits)
        noise = random_noise_images(noise_images, seed=config.seed)
        with _deterministic(config.threads):
            calibrate_activations(quantized, noise.split(config.batch_size))
        report = {"noise_images": noise_images, "seed": config.seed}
    report = {"name": name, "base": base, "bits": bits, "method": method, **report}
    report["wall_s"] = time.perf_counter() - start
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".pt.tmp")
    torch.save({"state_dict": quantized.state_dict(), "quantization": report}, tmp)
    tmp.replace(target)
    report["path"] = str(target)
    return quantized, report
