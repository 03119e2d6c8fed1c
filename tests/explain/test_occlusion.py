"""Occlusion against an explicit per-unit loop; word units; occluded_outputs."""

from __future__ import annotations

import pytest
import torch

from egkd.errors import EgkdError
from egkd.explain.base import to_words, unit_mask
from egkd.explain.occlusion import Occlusion, unit_index

from .conftest import MASK, make_batch


def _probs(model, ids, att, types):
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=att, token_type_ids=types).logits
    return logits if logits.shape[-1] == 1 else logits.softmax(-1)


def _loop_occlusion(model, batch, target, mode, words=False):
    """One example and one unit at a time, written as plainly as possible."""
    expected = torch.zeros(batch["input_ids"].shape, dtype=torch.float64)
    for i in range(batch["input_ids"].shape[0]):
        ids = batch["input_ids"][i : i + 1]
        att = batch["attention_mask"][i : i + 1]
        types = batch["token_type_ids"][i : i + 1]
        col = int(target[i])
        clean = _probs(model, ids, att, types)[0, col]
        wid = batch["word_ids"][i].tolist()
        positions = [p for p, w in enumerate(wid) if w >= 0]
        groups = [[p for p in positions if wid[p] == w] for w in sorted({wid[p] for p in positions})]
        if not words:
            groups = [[p] for p in positions]
        for group in groups:
            ids2, att2 = ids.clone(), att.clone()
            for p in group:
                if mode == "mask":
                    ids2[0, p] = MASK
                else:
                    att2[0, p] = 0
            drop = clean - _probs(model, ids2, att2, types)[0, col]
            for p in group:
                expected[i, p] = drop / len(group)
    return expected


@pytest.mark.parametrize("mode", ["mask", "remove"])
def test_token_occlusion_matches_loop(model, batch, mode):
    target = torch.tensor([1, 0, 0])
    got = Occlusion(mode=mode, mask_token_id=MASK).attribute(model, batch, target)
    expected = _loop_occlusion(model, batch, target, mode)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    assert got[unit_mask(batch)].abs().min() > 0


@pytest.mark.parametrize("mode", ["mask", "remove"])
def test_word_occlusion_masks_all_subwords_together(model, batch, mode):
    target = torch.tensor([0, 1, 1])
    occ = Occlusion(mode=mode, mask_token_id=MASK, units="word")
    got = occ.attribute(model, batch, target)
    torch.testing.assert_close(got, _loop_occlusion(model, batch, target, mode, words=True), rtol=1e-9, atol=1e-12)
    # Every token of a word carries an equal share, and the shares sum back to the word score.
    assert got[0, 1] == got[0, 2] and got[0, 4] == got[0, 5] == got[0, 6]
    words = to_words(got, batch["word_ids"])
    outs = occ.occluded_outputs(model, batch)
    clean = _probs(model, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    drops = clean.gather(1, target.view(-1, 1)) - outs.gather(2, target.view(-1, 1, 1).expand(-1, 4, 1))[..., 0]
    torch.testing.assert_close(words, drops * (torch.arange(4) < torch.tensor([[4], [2], [4]])))


def test_word_copies_really_mask_every_subword(batch):
    """A spy model records what it is fed: the copy for word 2 of example 0 masks all 3 subwords."""
    seen = []

    class Spy(torch.nn.Module):
        config = None

        def forward(self, input_ids, attention_mask=None, token_type_ids=None):
            seen.append(input_ids.clone())
            return type("Out", (), {"logits": torch.zeros(input_ids.shape[0], 2)})()

    Occlusion(mask_token_id=MASK, units="word").occluded_outputs(Spy(), batch)
    copies = torch.cat(seen[1:])  # seen[0] is the clean batch
    assert copies.shape[0] == 4 + 2 + 4  # one copy per word
    assert copies[2].tolist()[:8] == [2, 5, 6, 7, MASK, MASK, MASK, 11]


def test_occluded_outputs_shapes_and_padding_slots(model, regression_model, batch):
    occ = Occlusion(mask_token_id=MASK)
    outs = occ.occluded_outputs(model, batch)
    assert outs.shape == (3, 7, 2)  # 7 token units in the longest example
    torch.testing.assert_close(outs.sum(-1), torch.ones(3, 7, dtype=outs.dtype))
    clean = _probs(model, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    torch.testing.assert_close(outs[1, 3:], clean[1].expand(4, 2))  # example 1 has 3 units only
    assert occ.occluded_outputs(model, batch, units="word").shape == (3, 4, 2)
    assert occ.occluded_outputs(regression_model, batch).shape == (3, 7, 1)


def test_chunking_and_default_target(model, batch):
    clean = _probs(model, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    big = Occlusion(mask_token_id=MASK).attribute(model, batch, clean.argmax(-1))
    small = Occlusion(mask_token_id=MASK, chunk_size=3).attribute(model, batch)
    torch.testing.assert_close(small, big, rtol=1e-10, atol=1e-12)


def test_regression_uses_raw_output(regression_model):
    b = make_batch([[[5], [6]]])
    got = Occlusion(mask_token_id=MASK).attribute(regression_model, b)
    with torch.no_grad():
        full = regression_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[0, 0]
        ids = b["input_ids"].clone()
        ids[0, 1] = MASK
        masked = regression_model(input_ids=ids, attention_mask=b["attention_mask"]).logits[0, 0]
    torch.testing.assert_close(got[0, 1], full - masked)


def test_unit_index_and_errors(batch, model):
    index, counts = unit_index(batch, "word")
    assert counts.tolist() == [4, 2, 4]
    assert index[2].tolist()[:9] == [-1, 0, 1, 1, -1, 2, 3, -1, -1]
    with pytest.raises(EgkdError):
        Occlusion(mode="blank")
    with pytest.raises(EgkdError, match="mask_token_id"):
        Occlusion().attribute(model, batch)  # BertConfig has no mask_token_id


def test_attribute_with_outputs_is_both_in_one_pass(model, batch):
    occ = Occlusion(mask_token_id=MASK, units="word")
    target = torch.tensor([0, 1, 0])
    scores, outs = occ.attribute_with_outputs(model, batch, target)
    torch.testing.assert_close(scores, occ.attribute(model, batch, target))
    torch.testing.assert_close(outs, occ.occluded_outputs(model, batch))


def test_models_without_token_type_ids_are_fed_without_them(batch):
    """DistilBERT-like forwards name no token_type_ids; passing them anyway would break or be ignored."""
    seen = []

    class NoTypes(torch.nn.Module):
        config = None

        def forward(self, input_ids, attention_mask=None, **kwargs):
            seen.append(sorted(kwargs))
            return type("Out", (), {"logits": torch.zeros(input_ids.shape[0], 2)})()

    Occlusion(mask_token_id=MASK).attribute(NoTypes(), batch)
    assert seen and all(keys == [] for keys in seen)


@pytest.mark.parametrize("units", ["token", "word"])
def test_max_units_occludes_a_seeded_subset_with_the_full_outputs(model, batch, units):
    full = Occlusion(mask_token_id=MASK, units=units)
    part = Occlusion(mask_token_id=MASK, units=units, max_units=2, seed=3)
    target = torch.tensor([1, 0, 0])
    s_full, o_full = full.attribute_with_outputs(model, batch, target)
    s_part, o_part = part.attribute_with_outputs(model, batch, target)
    _, counts = unit_index(batch, units)
    computed = ~o_part[..., 0].isnan()
    for i, n in enumerate(counts.tolist()):
        assert int(computed[i, :n].sum()) == min(n, 2)  # at most max_units per example, never beyond its units
    # what was computed is exactly the full occlusion's output; the rest is NaN, scored 0
    torch.testing.assert_close(o_part[computed], o_full[computed])
    index, _ = unit_index(batch, units)
    on_computed = computed.gather(1, index.clamp(min=0)) & (index >= 0)
    torch.testing.assert_close(s_part[on_computed], s_full[on_computed])
    assert (s_part[~on_computed] == 0).all() and s_part.isfinite().all()

    # the subset depends on the example's idx, not on its place in the batch (a resumed cache draws the same)
    flipped = {k: v.flip(0) for k, v in batch.items()}
    _, o_flip = part.attribute_with_outputs(model, flipped, target.flip(0))
    assert torch.equal(~o_flip[..., 0].isnan(), computed.flip(0))
