"""One flat run configuration, nanoGPT style.

Every command (finetune, distill, evaluate, the demo) is driven by a :class:`RunConfig`. Values come from
three layers, later ones winning: the dataclass defaults, a YAML file (``--config run.yaml``), and the flags
given on the command line. The fully resolved config is written next to a run's outputs as ``config.yaml``
so that any run can be repeated exactly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from egkd.errors import EgkdError

# the model egkd fine-tunes by default, the demo and the grid start their teachers from, and the one bundled for
# offline use (egkd.models.resolve)
REFERENCE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass
class RunConfig:
    # what to train
    task: str = "sst2"
    data_dir: str | None = None
    out: str | None = None
    model: str = REFERENCE_MODEL  # finetune: the model to fine-tune
    teacher: str | None = None  # distill: a fine-tuned teacher (run folder, path or hub id)
    student: str = "depth:3"  # distill: layers:i,j,k | depth:N | config:... | path or hub id
    method: str = "kd"  # ft | kd | pkd | egkd | adkd

    # data
    max_seq_length: int = 128
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    length_grouping: bool = True
    augment: int = 0  # augmented, teacher-labelled copies per training example (Tang et al. 2019); 0 = off
    augment_mask: float = 0.1  # probability of masking each word of a copy
    augment_ngram: float = 0.25  # probability of cutting a copy down to a random 1-5-gram

    # optimisation
    epochs: float = 3.0
    batch_size: int = 32
    eval_batch_size: int = 64
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    grad_accum_steps: int = 1
    mixed_precision: str = "no"  # no | fp16 | bf16
    seed: int = 42
    deterministic: bool = False

    # loss terms
    alpha: float = 0.9  # weight of the KD term; (1 - alpha) goes to the gold-label term
    temperature: float = 2.0
    pkd_weight: float = 100.0  # PKD's beta (normalised [CLS] states give small MSE values)
    pkd_layer_map: str | None = None  # "0:1,1:3,2:5" student layer -> teacher layer; default from student

    # teacher cache (logits and explanations computed once; see egkd.cache)
    teacher_cache: bool = True

    # explanation guided distillation (method egkd); families combine with "+"
    explainer: str = "gradient"  # gradient | perturbation | selection | gradient+perturbation ...
    explain_target: str = "pred"  # class the explanations are taken for: pred (teacher's) | gold | all
    teacher_explainer: str = "gxi"  # teacher map of the gradient family: saliency | gxi | ig[:steps=8]
    student_explainer: str = "gxi"  # student map of the gradient family: gxi | ig[:steps=2,baseline=pad|zero]
    align_loss: str = "mse"  # mse | cosine | kl | topk (over L2-normalised unit maps) | rank
    grad_weight: float = 1.0
    grad_fraction: float = 0.25  # share of each batch that gets the (double backprop) student map
    grad_every: int = 1  # apply the gradient term every N steps
    perturb_weight: float = 1.0
    perturb_k: int = 1  # occluded copies per example and step
    perturb_mix: float = 0.5  # share of occluded units drawn from the teacher's importance (rest uniform)
    perturb_fraction: float = 0.4  # share of each batch that gets occluded copies
    perturb_units: int = 0  # teacher cache: occlude at most N sampled units per example (0: every unit)
    select_weight: float = 1.0
    rationale_budget: float = 0.2
    comp_weight: float = 1.0  # comprehensiveness relative to sufficiency inside the selection term
    select_fraction: float = 0.25  # share of each batch given the rationale and complement forwards
    adkd_weight: float = 1.0
    adkd_steps: int = 8
    adkd_top_k: float = 0.5
    explain_warmup: float = 0.0  # share of training over which explanation weights rise linearly from 0
    explain_decay: float = 0.0  # share of training at the end over which explanation weights fall linearly to 0
    explain_project: bool = False  # drop the part of the explanation gradient that opposes the task's (PCGrad)
    explain_grad_ratio: float = 0.0  # cap the explanation terms' gradient at this x the gold+KD gradient (0: off)

    # evaluation, checkpoints, logs
    eval_every: int = 0  # steps; 0 = at the end of each epoch
    save_every: int = 0  # steps; 0 = at the end of each epoch only
    keep_best: bool = True
    log_with: list[str] = field(default_factory=lambda: ["csv", "tensorboard"])
    log_every: int = 10
    overwrite: bool = False
    resume: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


FIELD_NAMES = {f.name for f in dataclasses.fields(RunConfig)}


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML run file; keys may use dashes or underscores, as on the command line."""
    p = Path(path)
    if not p.is_file():
        raise EgkdError(f"config file {p} does not exist")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise EgkdError(f"config file {p} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise EgkdError(f"config file {p} must hold a mapping of option: value")
    return {str(k).replace("-", "_"): v for k, v in raw.items()}


def build_config(yaml_path: str | Path | None = None, **overrides: Any) -> RunConfig:
    """Defaults <- YAML file <- explicit overrides (``None`` overrides mean "not given")."""
    values: dict[str, Any] = {}
    if yaml_path:
        values.update(load_yaml(yaml_path))
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(values) - FIELD_NAMES)
    if unknown:
        raise EgkdError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(FIELD_NAMES))}")
    cfg = RunConfig(**values)
    if cfg.mixed_precision not in {"no", "fp16", "bf16"}:
        raise EgkdError(f"--mixed-precision must be no, fp16 or bf16, not {cfg.mixed_precision!r}")
    if cfg.epochs <= 0 or cfg.batch_size <= 0 or cfg.learning_rate <= 0:
        raise EgkdError("--epochs, --batch-size and --learning-rate must be positive")
    if not 0.0 <= cfg.alpha <= 1.0:
        raise EgkdError(f"--alpha must lie in [0, 1], not {cfg.alpha}")
    if not 0.0 <= cfg.explain_warmup <= 1.0:
        raise EgkdError(f"--explain-warmup is a share of training in [0, 1], not {cfg.explain_warmup}")
    if not 0.0 <= cfg.explain_decay <= 1.0:
        raise EgkdError(f"--explain-decay is a share of training in [0, 1], not {cfg.explain_decay}")
    from egkd.explain.align import KINDS  # here, not at the top: the config module stays torch-free

    if cfg.align_loss not in KINDS:
        raise EgkdError(f"--align-loss must be one of {', '.join(KINDS)}, not {cfg.align_loss!r}")
    if cfg.explain_grad_ratio < 0:
        raise EgkdError(f"--explain-grad-ratio must be >= 0 (0 turns it off), not {cfg.explain_grad_ratio}")
    if (cfg.explain_grad_ratio or cfg.explain_project) and cfg.mixed_precision == "fp16":
        flag = "--explain-grad-ratio" if cfg.explain_grad_ratio else "--explain-project"
        raise EgkdError(f"{flag} splits the backward pass, which fp16 loss scaling does not support: "
                        "use --mixed-precision bf16 or no")
    if isinstance(cfg.log_with, str):
        cfg.log_with = [s for s in cfg.log_with.split(",") if s]
    return cfg
