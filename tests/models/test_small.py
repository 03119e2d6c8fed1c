"""BiLSTM/CNN students, their own tokenizers and word-level alignment with the teacher."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
from conftest import TINY_CORPUS, build_tiny_tokenizer

import egkd.models  # noqa: F401  (registers the small students with the Auto classes)
from egkd.data.tasks import get_task
from egkd.data.tokenize import Collator, tokenize_split
from egkd.errors import EgkdError
from egkd.explain import student_gradient_map, to_words
from egkd.models.small import BiLSTMConfig, BiLSTMForSequenceClassification, CNNConfig, CNNForSequenceClassification
from egkd.models.students import Built, build_student
from egkd.models.vocab import parse_kind, teacher_init_embeddings, train_tokenizer

HARD = [
    "It's a wasn't-quite-there movie, isn't it?!",
    "Zorblaxian naïveté (unbelievably) rocks... 100% -- or $5?",
    "the cat's hat: 'great' & \"dull\"",
]
KINDS = ("word", "wordpiece-300", "bpe-300")


pytestmark = pytest.mark.usefixtures("one_thread")


def word_starts(tokenizer, text: str) -> torch.Tensor:
    """One score per word via to_words: each token carries its word's first character / its token count."""
    enc = tokenizer(text)
    words = enc.word_ids()
    counts: dict[int, int] = {}
    for w in words:
        if w is not None:
            counts[w] = counts.get(w, 0) + 1
    scores = [0.0 if w is None else enc.word_to_chars(w).start / counts[w] for w in words]
    word_ids = torch.tensor([[-1 if w is None else w for w in words]])
    return to_words(torch.tensor([scores], dtype=torch.float64), word_ids)[0]


@pytest.fixture(scope="module")
def teacher_tokenizers(request):
    toks = {"tiny-wordpiece": build_tiny_tokenizer()}
    from egkd.models.resolve import bundled_path

    path = bundled_path("sentence-transformers/all-MiniLM-L6-v2")
    if path is not None:
        from transformers import AutoTokenizer

        toks["minilm"] = AutoTokenizer.from_pretrained(path)
    return toks


@pytest.mark.parametrize("kind", KINDS)
def test_word_alignment_one_score_per_word_in_order(kind, teacher_tokenizers):
    for teacher in teacher_tokenizers.values():
        student = train_tokenizer(TINY_CORPUS, kind, teacher)
        for text in HARD:
            t_tokens = teacher.tokenize(text)
            s_tokens = student.tokenize(text)
            t_scores, s_scores = word_starts(teacher, text), word_starts(student, text)
            assert len(t_scores) == len(s_scores) > 5, (kind, text, t_tokens, s_tokens)
            # same words in the same order: each word's score is its start offset in the text
            assert torch.allclose(t_scores, s_scores), (kind, text)
            assert torch.all(t_scores[1:] > t_scores[:-1])
    # a tokenization that really differs: unknown words and subwords on either side
    assert "[UNK]" in train_tokenizer(TINY_CORPUS, "word", teacher).tokenize(HARD[1])


def test_word_ids_agree_on_pairs_through_tokenize_split(teacher_tokenizers):
    teacher = teacher_tokenizers["tiny-wordpiece"]
    ds = datasets.Dataset.from_dict({"idx": [0, 1], "text_a": HARD[:2], "text_b": [HARD[2], "it's fine."],
                                     "label": [0, 1]})
    student = train_tokenizer(TINY_CORPUS, "bpe-300", teacher)
    a = tokenize_split(ds, teacher, "mrpc", 128)
    b = tokenize_split(ds, student, "mrpc", 128)
    for wa, wb in zip(a["word_ids"], b["word_ids"], strict=True):
        assert sorted(set(wa) - {-1}) == sorted(set(wb) - {-1})
        assert [w for w in wa if w >= 0] != [w for w in wb if w >= 0] or len(wa) == len(wb)


def test_parse_kind():
    assert parse_kind("bpe-8k") == ("bpe", 8000)
    assert parse_kind("word") == ("word", 30000)
    assert parse_kind("wordpiece-500") == ("wordpiece", 500)
    with pytest.raises(EgkdError):
        parse_kind("sentencepiece")


def _tiny_teacher_built() -> Built:
    from transformers import BertConfig, BertForSequenceClassification

    tok = build_tiny_tokenizer()
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=32, num_labels=2))
    return Built(model, tok)


def test_build_student_specs():
    teacher, task = _tiny_teacher_built(), get_task("sst2")
    lstm = build_student("bilstm:hidden=8,embed=6,layers=2", teacher, task, texts=TINY_CORPUS)
    assert isinstance(lstm.model, BiLSTMForSequenceClassification)
    assert lstm.model.config.num_layers == 2 and lstm.model.config.embed_size == 6
    assert lstm.model.config.vocab_size == len(lstm.tokenizer)
    cnn = build_student("cnn:filters=4,kernels=2-3,embed=8,init=random,tokenizer=bpe-300", teacher, task,
                        texts=TINY_CORPUS)
    assert isinstance(cnn.model, CNNForSequenceClassification) and cnn.model.config.kernel_sizes == [2, 3]
    bert = build_student("config:layers=1,hidden=32,heads=2,tokenizer=wordpiece-300", teacher, task,
                         texts=TINY_CORPUS)
    assert bert.model.config.vocab_size == len(bert.tokenizer)
    assert bert.tokenizer is not teacher.tokenizer and "token_type_ids" in bert.tokenizer("a", "b")
    with pytest.raises(EgkdError, match="unknown bilstm"):
        build_student("bilstm:width=3", teacher, task, texts=TINY_CORPUS)
    with pytest.raises(EgkdError, match="training text"):
        build_student("cnn:filters=3", teacher, task)


def test_teacher_init_is_mean_of_subwords():
    teacher = _tiny_teacher_built()
    student = train_tokenizer(TINY_CORPUS + ["guitars charmingly"], "word", teacher.tokenizer)
    table = teacher.model.get_input_embeddings().weight
    vecs = teacher_init_embeddings(student, teacher.tokenizer, table, table.shape[1])
    word = "charmingly"
    ids = teacher.tokenizer(word, add_special_tokens=False)["input_ids"]
    assert len(ids) > 1  # really split into subwords by the teacher
    assert torch.allclose(vecs[student.convert_tokens_to_ids(word)], table[ids].mean(0).detach())
    assert vecs[student.pad_token_id].abs().sum() == 0
    projected = teacher_init_embeddings(student, teacher.tokenizer, table, 5)
    assert projected.shape == (len(student), 5)
    assert torch.equal(projected, teacher_init_embeddings(student, teacher.tokenizer, table, 5))  # fixed


def _batch(tokenizer, texts):
    enc = [dict(tokenizer(t), word_ids=[-1 if w is None else w for w in tokenizer(t).word_ids()]) for t in texts]
    return Collator(tokenizer)(enc)


@pytest.mark.parametrize("cls,config", [
    (BiLSTMForSequenceClassification, BiLSTMConfig(hidden_size=5, embed_size=6, num_labels=2, dropout=0.0)),
    (CNNForSequenceClassification, CNNConfig(num_filters=3, kernel_sizes=[2, 3], embed_size=6, num_labels=2,
                                             dropout=0.0)),
])
def test_padding_does_not_change_outputs_and_save_load(cls, config, tmp_path):
    from transformers import AutoModelForSequenceClassification

    tok = train_tokenizer(TINY_CORPUS, "word")
    config.vocab_size = len(tok)
    torch.manual_seed(0)
    model = cls(config).double().eval()
    batch = _batch(tok, ["a dull film", TINY_CORPUS[0]])
    with torch.no_grad():
        both = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        alone = model(**tok(["a dull film"], return_tensors="pt")).logits
    assert torch.allclose(both[:1], alone)
    model.save_pretrained(tmp_path)
    back = AutoModelForSequenceClassification.from_pretrained(tmp_path).double().eval()
    assert type(back) is cls
    with torch.no_grad():
        assert torch.allclose(back(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, both)


def _tiny_bilstm_batch():
    """A 4-unit BiLSTM in double precision on a two-sentence batch, and a target class per sentence."""
    tok = train_tokenizer(TINY_CORPUS, "word")
    torch.manual_seed(0)
    model = BiLSTMForSequenceClassification(BiLSTMConfig(vocab_size=len(tok), hidden_size=4, embed_size=5,
                                                         num_labels=2, dropout=0.0)).double().eval()
    return model, _batch(tok, ["a dull film with no charm", "the cat sat"]), torch.tensor([0, 1])


def test_bilstm_gradient_map_is_differentiable_finite_differences():
    model, batch, target = _tiny_bilstm_batch()
    weights = torch.randn(batch["input_ids"].shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def objective() -> torch.Tensor:
        _, smap = student_gradient_map(model, batch, target)
        return (smap * weights).sum()

    param = model.lstm.weight_hh_l0
    (grad,) = torch.autograd.grad(objective(), param)
    eps = 1e-6
    for index in [(0, 0), (3, 1), (7, 2), (12, 3)]:
        with torch.no_grad():
            old = param[index].item()
            param[index] = old + eps
            plus = objective().item()
            param[index] = old - eps
            minus = objective().item()
            param[index] = old
        fd = (plus - minus) / (2 * eps)
        assert abs(grad[index].item() - fd) < 1e-6 + 1e-4 * abs(fd), (index, grad[index].item(), fd)
    assert grad.abs().sum() > 0


def test_own_vocabulary_faithfulness_erases_the_students_own_top_word_with_its_mask():
    """ERASER for a word-level student: comprehensiveness and sufficiency at the smallest fraction (top 1 word),
    computed by hand: explain the predicted class with gradient x input, mask the top word (or every other
    word) with the student's own [MASK] id, and take the drop of the predicted class's probability."""
    from egkd.evaluation.words import own_faithfulness
    from egkd.explain import get_explainer

    torch.manual_seed(0)
    lstm = build_student("bilstm:hidden=8,embed=6", _tiny_teacher_built(), get_task("sst2"), texts=TINY_CORPUS)
    lstm.model.eval()
    text = "the cat sat on the mat and it was great"
    ds = tokenize_split(datasets.Dataset.from_dict({"idx": [0], "text_a": [text], "label": [1]}), lstm.tokenizer,
                        "sst2", 32)
    report = own_faithfulness(lstm, ds, get_explainer("gxi"), is_regression=False)

    batch = Collator(lstm.tokenizer)([ds[0]])
    ids = batch["input_ids"]
    with torch.no_grad():
        probs = lstm.model(input_ids=ids, attention_mask=batch["attention_mask"]).logits.softmax(-1)[0]
    target = int(probs.argmax())
    emb = lstm.model.get_input_embeddings()(ids).detach().requires_grad_(True)
    logit = lstm.model(inputs_embeds=emb, attention_mask=batch["attention_mask"]).logits[0, target]
    (grad,) = torch.autograd.grad(logit, emb)
    scores = (grad * emb).sum(-1)[0].detach()
    words = batch["word_ids"][0] >= 0
    top = int(torch.where(words, scores, torch.tensor(float("-inf"))).argmax())
    mask_id = lstm.tokenizer.mask_token_id

    def p(new_ids):
        with torch.no_grad():
            return float(lstm.model(input_ids=new_ids, attention_mask=batch["attention_mask"]).logits
                         .softmax(-1)[0, target])

    without = ids.clone()
    without[0, top] = mask_id
    only = torch.where(words & (torch.arange(ids.shape[1]) != top), torch.tensor(mask_id), ids)
    assert report["comprehensiveness_by_fraction"]["0.01"] == pytest.approx(float(probs[target]) - p(without), abs=1e-5)
    assert report["sufficiency_by_fraction"]["0.01"] == pytest.approx(float(probs[target]) - p(only), abs=1e-5)
    assert report["n_scored"] == 1 and "comprehensiveness_per_example" not in report


def test_occlusion_occludes_each_model_with_its_own_mask_token():
    """`egkd evaluate --explainer occlusion` on a student with its own vocabulary: one explainer serves two models
    with two tokenizers, so each model's occlusion takes its own tokenizer's [MASK], filled in without asking
    (BERT and BiLSTM configs carry no mask_token_id)."""
    from egkd.evaluation.words import own_faithfulness, word_maps
    from egkd.explain import get_explainer

    torch.manual_seed(0)
    teacher = _tiny_teacher_built()
    lstm = build_student("bilstm:hidden=8,embed=6", teacher, get_task("sst2"), texts=TINY_CORPUS)
    lstm.model.eval()
    frame = datasets.Dataset.from_dict({"idx": [0, 1], "text_a": [TINY_CORPUS[0], "a dull film"], "label": [1, 0]})
    for built in (lstm, teacher):
        ds = tokenize_split(frame, built.tokenizer, "sst2", 32)
        explicit = get_explainer(f"occlusion:mask_token_id={built.tokenizer.mask_token_id}")
        rows, _ = word_maps(built.model, ds, built.tokenizer, get_explainer("occlusion"), None)
        expected, _ = word_maps(built.model, ds, built.tokenizer, explicit, None)
        for got, want in zip(rows, expected, strict=True):
            np.testing.assert_array_equal(got, want)
        assert any(np.abs(r).sum() > 0 for r in rows)
    shared = get_explainer("occlusion")
    assert own_faithfulness(lstm, ds_lstm := tokenize_split(frame, lstm.tokenizer, "sst2", 32), shared, False) == \
        own_faithfulness(lstm, ds_lstm, get_explainer(f"occlusion:mask_token_id={lstm.tokenizer.mask_token_id}"),
                         False)
    assert shared.mask_token_id is None  # the caller's explainer is not changed


def test_bilstm_few_step_ig_map_is_the_ig_explainers_from_its_own_pad():
    """--student-explainer ig on a student with its own vocabulary: the [PAD] baseline is the BiLSTM's own."""
    from egkd.explain.integrated_gradients import IntegratedGradients

    model, batch, target = _tiny_bilstm_batch()
    _, smap = student_gradient_map(model, batch, target, steps=3, baseline="pad")
    expected = IntegratedGradients(steps=3, baseline="pad", method="riemann_right").attribute(model, batch, target)
    torch.testing.assert_close(smap.detach(), expected)
    assert smap.requires_grad
