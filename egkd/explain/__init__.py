"""Explanations of sequence classifiers, for teachers (cached) and students (differentiable).

One method per module behind :class:`~egkd.explain.base.Explainer`; :func:`get_explainer` builds
one from a short spec string as used in configs and on the command line, e.g. ``'ig:steps=16'``.
"""

from __future__ import annotations

from egkd.errors import EgkdError
from egkd.explain.align import alignment_loss
from egkd.explain.base import (
    Explainer,
    embed,
    forward_from_embeddings,
    normalize,
    resolve_target,
    select_target,
    to_words,
    unit_mask,
)
from egkd.explain.gradient_x_input import GradientXInput
from egkd.explain.integrated_gradients import IntegratedGradients
from egkd.explain.occlusion import Occlusion
from egkd.explain.saliency import Saliency
from egkd.explain.selection import AmortizedSelector, rationale_inputs, top_r_rationale, train_selector
from egkd.explain.student import student_gradient_map

EXPLAINERS: dict[str, type[Explainer]] = {
    "saliency": Saliency,
    "gxi": GradientXInput,
    "gradient_x_input": GradientXInput,
    "ig": IntegratedGradients,
    "integrated_gradients": IntegratedGradients,
    "occlusion": Occlusion,
}


def _parse_value(text: str) -> object:
    """Spec values: ints, floats, booleans and ``none`` are converted; anything else stays a string."""
    lowered = text.strip().lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()


def get_explainer(spec: str) -> Explainer:
    """Build an explainer from ``'name'`` or ``'name:key=value,key=value'``.

    Names: ``saliency``, ``gxi`` (``gradient_x_input``), ``ig`` (``integrated_gradients``),
    ``occlusion``; keys are the class's constructor arguments. Mistakes raise :class:`EgkdError`
    naming what is known, because specs are typed by users.
    """
    name, _, rest = spec.strip().partition(":")
    name = name.strip().lower()
    if name not in EXPLAINERS:
        raise EgkdError(f"unknown explainer {name!r}; known: {', '.join(EXPLAINERS)}")
    kwargs: dict[str, object] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise EgkdError(f"bad explainer option {item!r} in {spec!r}; write key=value")
        kwargs[key.strip()] = _parse_value(value)
    try:
        return EXPLAINERS[name](**kwargs)
    except TypeError as err:
        raise EgkdError(f"bad options for explainer {name!r} in {spec!r}: {err}") from None


__all__ = [
    "EXPLAINERS",
    "AmortizedSelector",
    "Explainer",
    "GradientXInput",
    "IntegratedGradients",
    "Occlusion",
    "Saliency",
    "alignment_loss",
    "embed",
    "forward_from_embeddings",
    "get_explainer",
    "normalize",
    "rationale_inputs",
    "resolve_target",
    "select_target",
    "student_gradient_map",
    "to_words",
    "top_r_rationale",
    "train_selector",
    "unit_mask",
]
