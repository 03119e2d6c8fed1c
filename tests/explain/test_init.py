"""The explainer registry, and properties every explainer must have."""

from __future__ import annotations

import pytest
import torch

from egkd.errors import EgkdError
from egkd.explain import (
    GradientXInput,
    IntegratedGradients,
    Occlusion,
    Saliency,
    get_explainer,
    to_words,
    unit_mask,
)

from .conftest import MASK


def test_specs_build_instances():
    assert isinstance(get_explainer("saliency"), Saliency)
    assert isinstance(get_explainer("gxi"), GradientXInput)
    ig = get_explainer("ig:steps=16")
    assert isinstance(ig, IntegratedGradients) and ig.steps == 16 and ig.baseline == "pad"
    ig = get_explainer(" IG : steps=4, baseline=zero, internal_batch_size=none ")
    assert (ig.steps, ig.baseline, ig.internal_batch_size) == (4, "zero", None)
    occ = get_explainer("occlusion:mode=remove")
    assert isinstance(occ, Occlusion) and occ.mode == "remove"
    occ = get_explainer("occlusion:mask_token_id=103,units=word,chunk_size=64")
    assert (occ.mask_token_id, occ.units, occ.chunk_size) == (103, "word", 64)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("lime", "known: saliency, gxi"),
        ("ig:stepz=3", "stepz"),
        ("ig:steps", "key=value"),
        ("occlusion:mode=blank", "mode"),
    ],
)
def test_bad_specs_raise_user_errors(spec, message):
    with pytest.raises(EgkdError, match=message):
        get_explainer(spec)


EXPLAINERS = [
    Saliency(),
    GradientXInput(),
    IntegratedGradients(steps=4),
    IntegratedGradients(steps=4, baseline="mask", mask_token_id=MASK),
    Occlusion(mask_token_id=MASK),
    Occlusion(mode="remove", units="word"),
]


@pytest.mark.parametrize("explainer", EXPLAINERS, ids=repr)
def test_specials_and_padding_are_exactly_zero(explainer, model, regression_model, batch):
    for m in (model, regression_model):
        attr = explainer.attribute(m, batch)
        assert attr.shape == batch["input_ids"].shape
        assert (attr[~unit_mask(batch)] == 0).all()
        assert (attr[unit_mask(batch)] != 0).any()
        assert not attr.requires_grad
        # Summing into words keeps the total over units.
        torch.testing.assert_close(to_words(attr, batch["word_ids"]).sum(1), attr.sum(1))
