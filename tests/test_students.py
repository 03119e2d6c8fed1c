"""Students cut from a teacher copy exactly the chosen teacher layers, embeddings and head."""

from __future__ import annotations

import re

import pytest
import torch

from egkd.data.tasks import get_task
from egkd.errors import EgkdError
from egkd.models.students import Built, build_student, load_classifier, scratch_bert, uniform_layers

SST2 = get_task("sst2")
LAYER_KEY = re.compile(r"^bert\.encoder\.layer\.(\d+)\.(.+)$")


@pytest.fixture(scope="module")
def teacher6(minilm_path) -> Built:
    """A 6-layer tiny BERT with MiniLM's vocabulary and a non-trivial (randomised) head."""
    torch.manual_seed(0)
    built = scratch_bert("layers=6,hidden=64,heads=2", SST2)
    with torch.no_grad():
        for p in built.model.parameters():
            p.add_(torch.randn_like(p) * 0.01)  # no two layers alike, biases non-zero
    return built


def _check_cut(student: Built, teacher: Built, keep: list[int]) -> None:
    t_sd, s_sd = teacher.model.state_dict(), student.model.state_dict()
    assert student.model.config.num_hidden_layers == len(keep)
    assert len(student.model.bert.encoder.layer) == len(keep)
    assert student.teacher_layers == keep
    expected_keys = {k for k in t_sd if not (LAYER_KEY.match(k) and int(LAYER_KEY.match(k)[1]) not in keep)}
    renamed = set()
    for key in expected_keys:
        m = LAYER_KEY.match(key)
        renamed.add(f"bert.encoder.layer.{keep.index(int(m[1]))}.{m[2]}" if m else key)
    assert set(s_sd) == renamed
    for key, value in s_sd.items():
        m = LAYER_KEY.match(key)
        source = f"bert.encoder.layer.{keep[int(m[1])]}.{m[2]}" if m else key
        assert torch.equal(value, t_sd[source]), f"{key} is not a copy of teacher {source}"
    # the embeddings and the classifier come along unchanged
    assert torch.equal(s_sd["bert.embeddings.word_embeddings.weight"], t_sd["bert.embeddings.word_embeddings.weight"])
    assert torch.equal(s_sd["classifier.weight"], t_sd["classifier.weight"])
    assert torch.equal(s_sd["classifier.bias"], t_sd["classifier.bias"])


def test_layers_student_copies_chosen_layers(teacher6):
    student = build_student("layers:1,3,5", teacher6, SST2)
    _check_cut(student, teacher6, [1, 3, 5])
    assert student.tokenizer is teacher6.tokenizer


def test_layers_student_is_a_copy_not_a_view(teacher6):
    student = build_student("layers:0,2", teacher6, SST2)
    before = teacher6.model.bert.encoder.layer[2].output.dense.weight.clone()
    with torch.no_grad():
        student.model.bert.encoder.layer[1].output.dense.weight.add_(1.0)
        student.model.classifier.weight.add_(1.0)
    assert torch.equal(teacher6.model.bert.encoder.layer[2].output.dense.weight, before)
    assert len(teacher6.model.bert.encoder.layer) == 6


def test_layers_student_runs_like_a_model(teacher6):
    student = build_student("layers:1,3,5", teacher6, SST2)
    ids = torch.tensor([[2, 100, 200, 3]])
    student.model.eval()
    out = student.model(input_ids=ids, output_hidden_states=True)
    assert out.logits.shape == (1, 2)
    assert len(out.hidden_states) == 4


def test_depth_student_picks_uniform_layers(teacher6):
    student = build_student("depth:3", teacher6, SST2)
    assert student.teacher_layers == [1, 3, 5]
    _check_cut(student, teacher6, [1, 3, 5])
    assert build_student("depth:2", teacher6, SST2).teacher_layers == [2, 5]
    assert build_student("depth:6", teacher6, SST2).teacher_layers == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("n_teacher, n_student, expected", [(6, 3, [1, 3, 5]), (12, 6, [1, 3, 5, 7, 9, 11]),
                                                             (12, 4, [2, 5, 8, 11]), (6, 1, [5]), (4, 4, [0, 1, 2, 3])])
def test_uniform_layers(n_teacher, n_student, expected):
    assert uniform_layers(n_teacher, n_student) == expected


@pytest.mark.parametrize("spec", ["layers:6", "layers:1,7", "layers:-1", "layers:a,b", "layers:", "depth:7",
                                  "depth:0", "depth:x", "nonsense"])
def test_bad_student_specs_raise(teacher6, spec):
    with pytest.raises(EgkdError):
        build_student(spec, teacher6, SST2)


def test_config_student_is_fresh_bert_with_teacher_vocab(teacher6):
    student = build_student("config:layers=1,hidden=32,heads=2", teacher6, SST2)
    cfg = student.model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_labels) == (1, 32, 2, 2)
    assert cfg.vocab_size == len(teacher6.tokenizer)
    assert student.tokenizer is teacher6.tokenizer
    assert student.teacher_layers == []
    with pytest.raises(EgkdError):
        build_student("config:layers=1,colour=red", teacher6, SST2)


def test_teacher_label_count_mismatch(teacher6, tmp_path):
    folder = tmp_path / "sst2-teacher"
    teacher6.model.save_pretrained(folder)
    teacher6.tokenizer.save_pretrained(folder)
    with pytest.raises(EgkdError, match="2 output.*stsb needs 1"):
        load_classifier(str(folder), get_task("stsb"), expect_head=True)
    with pytest.raises(EgkdError, match="mnli needs 3"):
        load_classifier(str(folder), get_task("mnli"), expect_head=True)
    loaded = load_classifier(str(folder), SST2, expect_head=True)
    for key, value in teacher6.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value)


def test_missing_model_folder_is_a_user_error(tmp_path):
    with pytest.raises(EgkdError):
        load_classifier(str(tmp_path / "nope"), SST2, expect_head=True)
