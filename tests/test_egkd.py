"""Issue 3: explanation guided distillation, checked against independent ground truth.

1. planted evidence: a tiny teacher trained on the synthetic task puts its explanation mass on the planted
   words for every family, and an EGKD student ends closer to the teacher's explanations than a KD student
   trained with the same seed, data and epochs;
2. the teacher cache: hits, misses on changed weights, never uses a stale file, resumes finished shards;
4. the loss terms against computations by hand;
5. word-level alignment between two different tokenizers.

(3, the command line end to end, is in ``test_egkd_cli.py``.)
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import egkd.cache as cache_mod
from egkd import api
from egkd.cache import CacheSpec, TeacherCache, build_teacher_cache, cache_key, weights_fingerprint
from egkd.config import RunConfig, build_config
from egkd.data.synthetic import write_synthetic_glue
from egkd.data.tasks import get_task
from egkd.data.tokenize import Collator, tokenize_split
from egkd.errors import EgkdError
from egkd.evaluation.explanations import evidence_mass
from egkd.explain import alignment_loss, get_explainer, student_gradient_map, to_words, top_r_rationale, unit_mask
from egkd.losses.explanation import GradientAlignment, PerturbationMatching, SelectionConsistency
from egkd.losses.terms import KDLoss, StepOutputs, split_loss, total_loss
from egkd.models.students import Built, load_classifier, scratch_bert
from egkd.training.loop import balanced_backward, forward, grad_norm

TEACHER = "config:layers=2,hidden=64,heads=2"
STUDENT = "config:layers=1,hidden=64,heads=2"  # random init: there is something to learn
MAX_LEN = 32
N_TRAIN, N_DEV = 800, 200  # 800 train rows = two cache shards of 512


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------ shared fixtures
@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth-glue")
    write_synthetic_glue(root, n_train=N_TRAIN, n_dev=N_DEV, seed=0)
    return root


@pytest.fixture(scope="module")
def synth_teacher(synth_root, tmp_path_factory) -> Path:
    """A 2-layer teacher fine-tuned on the planted-evidence task (3 epochs reach 100 % dev accuracy)."""
    out = tmp_path_factory.mktemp("synth-runs") / "teacher"
    torch.set_num_threads(1)
    api.finetune(task="synth", data_dir=str(synth_root), model=TEACHER, out=str(out), epochs=3,
                 learning_rate=1e-3, batch_size=32, max_seq_length=MAX_LEN, log_with=["csv"], seed=0)
    return out


def _tokenized(split: str, tokenizer, synth_root: Path):
    cfg = RunConfig(task="synth", data_dir=str(synth_root), max_seq_length=MAX_LEN)
    return api.load_tokenized(get_task("synth"), split, tokenizer, cfg, all_processes=False)


@pytest.fixture(scope="module")
def teacher_built(synth_teacher) -> Built:
    built = load_classifier(str(synth_teacher), get_task("synth"), expect_head=True)
    built.model.eval()
    return built


# ------------------------------------------------------------------------------------ 1. planted evidence
def test_teacher_puts_its_explanation_mass_on_the_planted_evidence(synth_teacher, synth_root, teacher_built):
    metrics = json.loads((synth_teacher / "metrics.json").read_text())
    assert metrics["accuracy"] > 90, metrics  # measured: 100.0

    model, tok = teacher_built.model, teacher_built.tokenizer
    ds = _tokenized("dev", tok, synth_root)
    batch = Collator(tok)(list(ds))
    rationales = {}
    for line in (synth_root / "SYNTH" / "dev_evidence.jsonl").read_text().splitlines():
        row = json.loads(line)
        rationales[row["idx"]] = row
    evidence = [[w for w, r in enumerate(rationales[i]["rationale"]) if r] for i in batch["idx"].tolist()]
    # the synthetic words are single WordPiece tokens: the tokenizer's words are the file's words
    for i, k in enumerate(batch["idx"].tolist()):
        assert int(batch["word_ids"][i].max()) + 1 == len(rationales[k]["tokens"])
    with torch.no_grad():
        target = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}).logits.argmax(-1)

    # a map that ignored the evidence would put ~1.5 / 13.5 ~ 11 % of its mass there
    masses = {}
    for name in ("gxi", "ig:steps=16", f"occlusion:mask_token_id={tok.mask_token_id}"):
        attr = get_explainer(name).attribute(model, batch, target).detach()
        masses[name] = evidence_mass(attr, batch["word_ids"], evidence)
    print("evidence mass per family:", masses)  # measured: gxi 0.82, ig 0.78, occlusion 0.78
    for name, mass in masses.items():
        assert mass > 0.5, (name, mass)

    # selection: the top-20 % rationale of |gxi| holds every planted word for most examples
    gxi = get_explainer("gxi").attribute(model, batch, target).detach()
    rationale = top_r_rationale(gxi.abs(), unit_mask(batch), budget=0.2)
    covered = [set(evidence[i]) <= set(batch["word_ids"][i][rationale[i]].tolist()) for i in range(len(evidence))]
    print("rationale coverage of the evidence:", np.mean(covered))  # measured: 0.99
    assert np.mean(covered) > 0.8


def _consistency(run: Path) -> float:
    metrics = api.evaluate(run, explanations=True, show=False)
    cons = metrics["explanations"]["consistency"]
    assert cons["n_scored"] > 0.9 * N_DEV
    return cons["spearman"]


def test_egkd_student_explains_more_like_its_teacher_than_kd(synth_teacher, synth_root, tmp_path):
    """Same seed, data, student and epochs; only the method differs. Consistency = mean Spearman of the
    gxi maps of teacher and student on the dev set (teacher's predicted class)."""
    common = dict(task="synth", data_dir=str(synth_root), teacher=str(synth_teacher), student=STUDENT, epochs=6,
                  learning_rate=1e-3, batch_size=32, max_seq_length=MAX_LEN, log_with=["csv"], seed=0)
    runs = {
        "kd": dict(method="kd"),
        # the gradient term every other step: at random init the student's maps are tiny and the normalized
        # alignment's gradient dwarfs the KD term's, which stalls the task when it runs every step
        "egkd-gradient": dict(method="egkd", explainer="gradient", grad_weight=1.0, grad_every=2),
        "egkd-perturbation": dict(method="egkd", explainer="perturbation", perturb_weight=5.0, perturb_fraction=1.0),
    }
    acc, rho = {}, {}
    for name, kw in runs.items():
        out = tmp_path / name
        acc[name] = api.distill(out=str(out), **common, **kw)["accuracy"]
        rho[name] = _consistency(out)
    print("dev accuracy:", acc, "consistency (spearman):", rho)
    # measured (seed 0, torch CPU, 1 thread): kd 0.41 (acc 100), egkd-gradient 0.68 (acc 82), egkd-perturbation
    # 0.49 (acc 100). The gradient gap held for every seed and init tried (0.61-0.73 vs 0.29-0.41); the
    # perturbation gap is smaller (+0.05..0.12). The gradient student's accuracy varied with the init
    # (56-98 %), so only its consistency is asserted.
    assert rho["egkd-gradient"] > rho["kd"] + 0.1
    assert rho["egkd-perturbation"] > rho["kd"]
    assert acc["egkd-perturbation"] > 90


# ---------------------------------------------------------------------------------------- 2. teacher cache
class ExplainerSpy:
    """Wraps ``egkd.cache.get_explainer`` and counts the rows the cache builder explains."""

    def __init__(self, monkeypatch):
        self.rows = 0
        real = cache_mod.get_explainer
        spy = self

        def fake(spec):
            inner = real(spec)

            class Counting:
                def attribute(self, model, batch, target=None):
                    spy.rows += batch["input_ids"].shape[0]
                    return inner.attribute(model, batch, target)

            return Counting()

        monkeypatch.setattr(cache_mod, "get_explainer", fake)


@pytest.fixture(scope="module")
def train_ds(teacher_built, synth_root):
    return _tokenized("train", teacher_built.tokenizer, synth_root)


GXI = CacheSpec("gradient", explainer="gxi")


def test_cache_hits_the_second_time_and_misses_when_the_teacher_changes(teacher_built, train_ds, tmp_path,
                                                                        monkeypatch, capsys):
    model, tok = teacher_built.model, teacher_built.tokenizer
    spy = ExplainerSpy(monkeypatch)
    first = build_teacher_cache(model, tok, train_ds, GXI, MAX_LEN, root=tmp_path)
    assert spy.rows == len(train_ds) == first.tensors["map"].shape[0]
    assert "teacher cache built" in capsys.readouterr().err
    mtime = first.path.stat().st_mtime_ns

    spy.rows = 0
    second = build_teacher_cache(model, tok, train_ds, GXI, MAX_LEN, root=tmp_path)
    assert spy.rows == 0  # nothing recomputed
    assert second.key == first.key and second.path == first.path
    assert second.path.stat().st_mtime_ns == mtime
    assert "teacher cache hit" in capsys.readouterr().err
    torch.testing.assert_close(second.tensors["map"], first.tensors["map"])

    with torch.no_grad():  # one parameter nudged: another teacher, another key, rebuilt
        model.classifier.bias[0] += 1e-3
    try:
        third = build_teacher_cache(model, tok, train_ds, GXI, MAX_LEN, root=tmp_path)
    finally:
        with torch.no_grad():
            model.classifier.bias[0] -= 1e-3
    assert third.key != first.key and third.path != first.path
    assert spy.rows == len(train_ds)
    assert first.path.is_file()  # the other teacher's entry is left alone


def test_multi_view_cache_holds_one_teacher_map_per_class(teacher_built, train_ds, tmp_path):
    from egkd.explain.gradient_x_input import GradientXInput

    model, tok = teacher_built.model, teacher_built.tokenizer
    sub = train_ds.select(range(8))
    entry = build_teacher_cache(model, tok, sub, CacheSpec("gradient", explainer="gxi", target="all"), MAX_LEN,
                                root=tmp_path, show=False)
    single = build_teacher_cache(model, tok, sub, GXI, MAX_LEN, root=tmp_path, show=False)
    assert entry.key != single.key
    maps = entry.tensors["map"]
    assert maps.shape[-1] == model.config.num_labels and maps.shape[0] == 8
    batch = Collator(tok)(list(sub))
    rows = entry.rows(batch, ("map", "target"))
    model.eval()
    for c in range(maps.shape[-1]):
        want = GradientXInput().attribute(model, batch, torch.full((8,), c))
        torch.testing.assert_close(rows["map"][..., c], want.float(), atol=1e-5, rtol=1e-4)
    # the single-class entry is the multi-view entry's column of the predicted class
    picked = rows["map"].gather(-1, rows["target"].view(-1, 1, 1).expand(*rows["map"].shape[:2], 1)).squeeze(-1)
    torch.testing.assert_close(single.rows(batch, ("map",))["map"], picked, atol=1e-5, rtol=1e-4)


def test_cache_file_with_a_stale_key_is_rebuilt_never_used(teacher_built, train_ds, tmp_path, monkeypatch):
    model, tok = teacher_built.model, teacher_built.tokenizer
    reference = build_teacher_cache(model, tok, train_ds, GXI, MAX_LEN, root=tmp_path / "ref", show=False)
    key = cache_key(weights_fingerprint(model), train_ds._fingerprint, GXI, MAX_LEN)
    assert key == reference.key
    root = tmp_path / "stale"
    root.mkdir()
    bogus = {name: torch.full_like(t, 7) for name, t in reference.tensors.items()}
    bogus["idx"] = reference.tensors["idx"]
    save_file(bogus, str(root / f"{key}.safetensors"), metadata={"key": "something-else"})

    spy = ExplainerSpy(monkeypatch)
    rebuilt = build_teacher_cache(model, tok, train_ds, GXI, MAX_LEN, root=root, show=False)
    assert spy.rows == len(train_ds)
    assert rebuilt.path == root / f"{key}.safetensors"
    with safe_open(str(rebuilt.path), framework="pt") as f:
        assert f.metadata()["key"] == key
    for name, t in reference.tensors.items():
        torch.testing.assert_close(rebuilt.tensors[name], t)


def test_cache_resumes_from_a_finished_shard(teacher_built, train_ds, tmp_path, monkeypatch):
    model, tok = teacher_built.model, teacher_built.tokenizer
    reference = build_teacher_cache(model, tok, train_ds, GXI, MAX_LEN, root=tmp_path / "ref", show=False)
    root = tmp_path / "resume"
    partial = root / f"{reference.key}.partial"
    partial.mkdir(parents=True)
    shard0 = {name: t[:512].clone() for name, t in reference.tensors.items()}
    shard0["map"].fill_(7.0)  # a marker: if shard 0 were recomputed, the 7s would be gone
    save_file(shard0, str(partial / "000000.safetensors"))

    spy = ExplainerSpy(monkeypatch)
    resumed = build_teacher_cache(model, tok, train_ds, GXI, MAX_LEN, root=root, show=False)
    assert spy.rows == len(train_ds) - 512  # only the second shard
    assert bool((resumed.tensors["map"][:512] == 7.0).all())
    torch.testing.assert_close(resumed.tensors["map"][512:], reference.tensors["map"][512:])
    torch.testing.assert_close(resumed.tensors["idx"], reference.tensors["idx"])
    assert not partial.exists()  # cleaned up once the entry is whole


def test_two_runs_that_need_one_entry_build_its_shards_together(teacher_built, train_ds, tmp_path, monkeypatch,
                                                                 capsys):
    """Two grid processes needing one entry used to take turns: the second sat idle while the first built it (up to
    40 minutes for a perturbation entry). Now a run builds the shards no other run holds, waits for the ones
    another run is building, and the entry is merged once, its cost the sum of every shard's seconds."""
    import threading

    from egkd.locks import exclusive

    model, tok = teacher_built.model, teacher_built.tokenizer
    reference = build_teacher_cache(model, tok, train_ds, GXI, MAX_LEN, root=tmp_path / "ref", show=False)
    assert len(train_ds) > cache_mod.SHARD_ROWS  # two shards: the other run holds the first
    root = tmp_path / "shared"
    partial = root / f"{reference.key}.partial"
    held, release = threading.Event(), threading.Event()

    def other_run() -> None:  # holds shard 0's lock, then writes a marked shard 0 (it "took" 5 s) and lets go
        with exclusive(partial / ".000000.lock"):
            held.set()
            release.wait(timeout=30)
            shard0 = {name: t[: cache_mod.SHARD_ROWS].clone() for name, t in reference.tensors.items()}
            shard0["map"].fill_(7.0)
            save_file(shard0, str(partial / "000000.safetensors"), metadata={"seconds": "5.0"})

    thread = threading.Thread(target=other_run)
    thread.start()
    assert held.wait(timeout=30)
    spy = ExplainerSpy(monkeypatch)
    result: dict[str, TeacherCache] = {}
    builder = threading.Thread(target=lambda: result.setdefault(
        "entry", build_teacher_cache(model, tok, train_ds, GXI, MAX_LEN, root=root)))
    builder.start()
    for _ in range(600):  # it builds the shard no one holds, then waits for the held one
        if (partial / "000001.safetensors").is_file():
            break
        builder.join(timeout=0.1)
    builder.join(timeout=0.5)
    assert builder.is_alive() and "entry" not in result
    assert spy.rows == len(train_ds) - cache_mod.SHARD_ROWS
    release.set()
    thread.join(timeout=30)
    builder.join(timeout=60)
    entry = result["entry"]
    assert spy.rows == len(train_ds) - cache_mod.SHARD_ROWS  # shard 0 was not computed here
    assert bool((entry.tensors["map"][: cache_mod.SHARD_ROWS] == 7.0).all())  # it is the other run's shard
    torch.testing.assert_close(entry.tensors["map"][cache_mod.SHARD_ROWS:],
                               reference.tensors["map"][cache_mod.SHARD_ROWS:])
    torch.testing.assert_close(entry.tensors["idx"], reference.tensors["idx"])
    with safe_open(str(entry.path), framework="pt") as f:
        seconds = float(f.metadata()["seconds"])
    assert 5.0 < seconds < 5.0 + 60  # the other run's 5 s plus this run's own shard
    assert "waiting for that part" in capsys.readouterr().err
    assert not partial.exists()
    # a third run loads the merged entry and computes nothing
    spy.rows = 0
    again = build_teacher_cache(model, tok, train_ds, GXI, MAX_LEN, root=root, show=False)
    assert spy.rows == 0 and again.path == entry.path


# ----------------------------------------------------------------------------- 4. loss terms by hand
CLS, SEP, PAD, MASK = 101, 102, 0, 103


def hand_batch() -> dict[str, torch.Tensor]:
    """Two examples, [CLS] w.. [SEP] [PAD]..; the second has a two-token word."""
    ids = torch.tensor([[CLS, 11, 12, 13, 14, SEP, PAD], [CLS, 21, 22, 23, SEP, PAD, PAD]])
    words = torch.tensor([[-1, 0, 1, 2, 3, -1, -1], [-1, 0, 1, 1, -1, -1, -1]])
    return {"input_ids": ids, "attention_mask": (ids != PAD).long(), "token_type_ids": torch.zeros_like(ids),
            "word_ids": words, "idx": torch.tensor([0, 1]), "labels": torch.tensor([1, 0])}


def tempered_kl(student_logits: torch.Tensor, teacher_probs: torch.Tensor, t: float) -> float:
    """T^2 * KL(q_teacher || q_student), q_teacher proportional to p^(1/T), written out element by element."""
    total = 0.0
    for s, p in zip(student_logits.tolist(), teacher_probs.tolist(), strict=True):
        qt = [pi ** (1 / t) for pi in p]
        qt = [q / sum(qt) for q in qt]
        es = [math.exp(si / t) for si in s]
        qs = [e / sum(es) for e in es]
        total += sum(a * (math.log(a) - math.log(b)) for a, b in zip(qt, qs, strict=True))
    return t * t * total / len(student_logits)


def test_perturbation_copy_hides_exactly_the_sampled_unit_and_loss_is_tempered_kl():
    batch = hand_batch()
    teacher_map = torch.zeros(2, 7)
    teacher_map[0, 3] = -2.0  # token 13: the third unit (unit 2) of example 0; |importance| is what counts
    teacher_map[1, 2] = 0.5  # token 22: unit 1 of example 1 (token units: 21 -> 0, 22 -> 1, 23 -> 2)
    occluded = torch.rand(2, 7, 3, generator=torch.Generator().manual_seed(0)) + 0.1
    occluded = occluded / occluded.sum(-1, keepdim=True)
    cached = {"perturbation": {"map": teacher_map, "occluded": occluded}}
    term = PerturbationMatching(k=1, mix=1.0, temperature=2.0, mask_token_id=MASK)

    copies = term.augment(batch, cached)
    assert term._last_units.tolist() == [[2], [1]]
    expected = batch["input_ids"].clone()
    expected[0, 3] = MASK
    expected[1, 2] = MASK
    assert torch.equal(copies["input_ids"], expected)
    assert torch.equal(copies["attention_mask"], batch["attention_mask"])

    s = torch.tensor([[0.3, -1.2, 2.0], [1.0, 0.0, -0.5]])
    out = StepOutputs(batch=batch, student_logits=torch.zeros(2, 3),
                      extras={"cached": cached, "aug_logits": {"perturbation": s}})
    by_hand = tempered_kl(s, torch.stack([occluded[0, 2], occluded[1, 1]]), 2.0)
    assert float(term(out)) == pytest.approx(by_hand, rel=1e-5)


def test_perturbation_uniform_sampling_only_hides_units():
    batch = hand_batch()
    term = PerturbationMatching(k=3, mix=0.0, mask_token_id=MASK, seed=1)
    cached = {"perturbation": {"map": torch.zeros(2, 7), "occluded": torch.zeros(2, 7, 2)}}
    units_of = {0: {1, 2, 3, 4}, 1: {1, 2, 3}}
    seen = {0: set(), 1: set()}
    for _ in range(30):
        copies = term.augment(batch, cached)
        assert copies["input_ids"].shape[0] == 6
        for row in range(6):
            ex = row // 3
            hidden = (copies["input_ids"][row] != batch["input_ids"][ex]).nonzero().view(-1).tolist()
            assert len(hidden) == 1 and set(hidden) <= units_of[ex]
            seen[ex].update(hidden)
    assert seen == units_of  # every unit gets its turn, never [CLS], [SEP] or padding


class RecordingModel(nn.Module):
    """A fake classifier: logits are a fixed function of the ids; every input it is given is recorded."""

    def __init__(self):
        super().__init__()
        self.calls: list[dict[str, torch.Tensor]] = []
        self.scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None):
        self.calls.append({"input_ids": input_ids, "attention_mask": attention_mask})
        x = (input_ids.float() * attention_mask.float()) / 100
        logits = torch.stack([x.sum(1), x.mean(1), -x.max(1).values], dim=-1) * self.scale
        return type("Out", (), {"logits": logits})()


def test_selection_sufficiency_reads_the_short_rationale_only_input():
    batch = hand_batch()
    rationale = torch.zeros(2, 7, dtype=torch.uint8)
    rationale[0, 2] = rationale[0, 4] = 1  # tokens 12 and 14
    rationale[1, 1] = 1  # token 21
    rationale[0, 0] = rationale[0, 6] = 1  # set on [CLS] and padding: must not count
    teacher_full = torch.tensor([[0.5, 1.0, -1.0], [2.0, 0.0, 0.1]])
    cached = {"selection": {"rationale": rationale, "logits": teacher_full,
                            "on_complement": torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])}}
    model = RecordingModel()
    term = SelectionConsistency(comprehensiveness=0.0, temperature=2.0, pad_token_id=PAD)
    out = StepOutputs(batch=batch, student_logits=torch.zeros(2, 3), extras={"cached": cached, "model": model})
    loss = term(out)

    assert len(model.calls) == 1  # no comprehensiveness pass at weight 0
    short = model.calls[0]
    assert short["input_ids"].tolist() == [[CLS, 12, 14, SEP], [CLS, 21, SEP, PAD]]
    assert short["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    logits = RecordingModel()(input_ids=short["input_ids"], attention_mask=short["attention_mask"]).logits
    probs = F.softmax(teacher_full, -1)  # tempered teacher from logits = from probabilities
    assert float(loss.detach()) == pytest.approx(tempered_kl(logits.detach(), probs, 2.0), rel=1e-5)

    # comprehensiveness: the second input is the complement ([CLS], the other units, [SEP])
    model.calls.clear()
    SelectionConsistency(comprehensiveness=1.0, pad_token_id=PAD)(out)
    assert model.calls[1]["input_ids"].tolist() == [[CLS, 11, 13, SEP], [CLS, 22, 23, SEP]]


def _tiny_student(seed: int = 0):
    torch.manual_seed(seed)
    built = scratch_bert("layers=1,hidden=32,heads=2", get_task("sst2"))
    return built.model.eval()


def _bert_batch(b: int = 8, length: int = 9, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 2000, (b, length), generator=g)
    lengths = torch.randint(4, length + 1, (b,), generator=g)
    pos = torch.arange(length).unsqueeze(0)
    ids[:, 0] = CLS
    ids[pos == (lengths - 1).unsqueeze(1)] = SEP
    ids[pos >= lengths.unsqueeze(1)] = PAD
    words = torch.where((pos > 0) & (pos < (lengths - 1).unsqueeze(1)), pos - 1, torch.full_like(pos, -1))
    return {"input_ids": ids, "attention_mask": (ids != PAD).long(), "token_type_ids": torch.zeros_like(ids),
            "word_ids": words, "idx": torch.arange(b), "labels": torch.arange(b) % 2}


def _gradient_cache(batch, seed: int = 1) -> TeacherCache:
    b, length = batch["input_ids"].shape
    g = torch.Generator().manual_seed(seed)
    tensors = {"logits": torch.randn(b, 2, generator=g), "target": torch.randint(0, 2, (b,), generator=g),
               "idx": batch["idx"].clone(), "map": torch.randn(b, length, generator=g)}
    return TeacherCache(tensors, "hand", Path("hand.safetensors"))


def test_gradient_alignment_with_fraction_uses_only_the_first_rows():
    model, batch = _tiny_student(), _bert_batch(b=8)
    term = GradientAlignment(kind="mse", fraction=0.25)
    assert term.rows(8) == 2 and term.rows(7) == 2 and term.rows(9) == 3  # ceil(0.25 B)
    cache = _gradient_cache(batch)
    out = forward(model, batch, [term], None, {"gradient": cache}, False, step=0)
    assert out.extras["student_map"].shape == (2, batch["input_ids"].shape[1])
    # the logits of all rows are the model's (eval mode: the map path and the plain path agree)
    with torch.no_grad():
        plain = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}).logits
    torch.testing.assert_close(out.student_logits.detach(), plain, atol=1e-5, rtol=1e-5)

    first = {k: v[:2] for k, v in batch.items()}
    _, s_map = student_gradient_map(model, first, cache.tensors["target"][:2])
    expected = alignment_loss(s_map, cache.tensors["map"][:2], unit_mask(first), kind="mse").detach()
    value = term(out)
    assert float(value.detach()) == pytest.approx(float(expected), rel=1e-5)
    value.backward()  # differentiable through the double-backprop map
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())

    # the rows past ceil(0.25 B) do not matter; the first ones do
    cache.tensors["map"][2:] = torch.randn(6, batch["input_ids"].shape[1])
    out2 = forward(model, batch, [term], None, {"gradient": cache}, False, step=0)
    assert float(term(out2).detach()) == pytest.approx(float(expected), rel=1e-5)
    cache.tensors["map"][0] = -cache.tensors["map"][0]
    out3 = forward(model, batch, [term], None, {"gradient": cache}, False, step=0)
    assert float(term(out3).detach()) != pytest.approx(float(expected), rel=1e-3)


def test_student_explainer_ig_gives_the_training_step_a_few_step_ig_map():
    model, batch = _tiny_student(), _bert_batch(b=4)
    cache = _gradient_cache(batch)
    built = Built(model, type("Tok", (), {"mask_token_id": MASK, "pad_token_id": PAD})())
    cfg = RunConfig(method="egkd", explainer="gradient", grad_fraction=0.5, student_explainer="ig:steps=3")
    (_, _, term) = api.build_terms(cfg, built)
    assert (term.steps, term.baseline) == (3, "pad")
    out = forward(model, batch, [term], None, {"gradient": cache}, False, step=0)
    first = {k: v[:2] for k, v in batch.items()}
    target = cache.tensors["target"][:2]
    _, ig_map = student_gradient_map(model, first, target, steps=3, baseline="pad")
    _, gxi_map = student_gradient_map(model, first, target)
    torch.testing.assert_close(out.extras["student_map"].detach(), ig_map.detach())
    assert not torch.allclose(ig_map, gxi_map)
    with torch.no_grad():  # the map's forward still yields the clean input's logits for CE/KD
        plain = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}).logits
    torch.testing.assert_close(out.student_logits.detach(), plain, atol=1e-5, rtol=1e-5)
    with pytest.raises(EgkdError, match="single-class"):
        api.build_terms(RunConfig(method="egkd", explain_target="all", student_explainer="ig"), built)
    with pytest.raises(EgkdError, match="unknown student explainer"):
        api.build_terms(RunConfig(method="egkd", student_explainer="saliency"), built)


def test_term_every_skips_steps():
    model, batch = _tiny_student(), _bert_batch(b=4)
    cache = {"gradient": _gradient_cache(batch)}
    grad = GradientAlignment(weight=1.0)
    grad.every = 3
    terms = [KDLoss(1.0), grad]
    for step in range(7):
        out = forward(model, batch, terms, None, cache, False, step=step)
        _, parts = total_loss(terms, out)
        on = step % 3 == 0
        assert ("gradient" in parts) == on, step
        assert ("student_map" in out.extras) == on, step  # no double backprop on skipped steps
        assert "kd" in parts

    cfg = RunConfig(method="egkd", explainer="gradient+perturbation", grad_every=3)
    built = Built(model, type("Tok", (), {"mask_token_id": MASK, "pad_token_id": PAD})())
    terms = api.build_terms(cfg, built)
    assert [t.every for t in terms if t.name == "gradient"] == [3]
    assert [t.every for t in terms if t.name == "perturbation"] == [1]


# ---------------------------------------------------------------------- 5. words across two tokenizers
TRAIN_SENTENCES = [
    "the movie was great and the acting was wonderful",
    "it was a dull film with no charm at all",
    "the cat sat on the mat near the window",
    "a man is playing a guitar in the park",
    "we watched the film twice and liked it",
    "this story is charming and often moving",
]
SENTENCES = [
    "don't watch it , it's awful !",  # contractions and punctuation
    "the zyzzyva's performance was unbelievably wonderful.",  # an unknown word, possessive, glued period
    "i can't say ... well , maybe (sort of) great?!",
    "naïve café visitors liked it",  # characters the vocabulary never saw
    "the cat sat on the mat",
]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _fast_tokenizer(kind: str, pre: str):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token="[UNK]"))
        trainer = trainers.BpeTrainer(vocab_size=120, special_tokens=SPECIALS, show_progress=False)
    else:
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        trainer = trainers.WordPieceTrainer(vocab_size=120, special_tokens=SPECIALS, show_progress=False)
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit() if pre == "whitespace" else pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(TRAIN_SENTENCES, trainer=trainer)
    tok.post_processor = processors.BertProcessing(("[SEP]", tok.token_to_id("[SEP]")),
                                                   ("[CLS]", tok.token_to_id("[CLS]")))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]",
                                   model_input_names=["input_ids", "token_type_ids", "attention_mask"])


def _tokenize(tokenizer):
    ds = datasets.Dataset.from_dict({"text_a": SENTENCES, "label": [0] * len(SENTENCES),
                                     "idx": list(range(len(SENTENCES)))})
    return tokenize_split(ds, tokenizer, "sst2", max_seq_length=64)


def _whitespace_word_of_tokens(tokenizer, sentence: str) -> list[int]:
    """Per token, the whitespace word its characters lie in (-1 for specials), from character offsets only."""
    spans = [m.span() for m in re.finditer(r"\S+", sentence)]
    enc = tokenizer(sentence, return_offsets_mapping=True, truncation=True, max_length=64)
    out = []
    for (start, end), sid in zip(enc["offset_mapping"], enc.sequence_ids(), strict=True):
        if sid is None:
            out.append(-1)
            continue
        (w,) = [i for i, (a, b) in enumerate(spans) if a <= start and end <= b]
        out.append(w)
    return out


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_to_words_sums_subwords_into_whitespace_words(kind):
    tokenizer = _fast_tokenizer(kind, "whitespace")
    ds = _tokenize(tokenizer)
    g = torch.Generator().manual_seed(0)
    split_words = 0
    for row, sentence in zip(ds, SENTENCES, strict=True):
        word_ids = torch.tensor(row["word_ids"]).unsqueeze(0)
        token_map = torch.randn(word_ids.shape, generator=g)
        words = to_words(token_map, word_ids)
        n_words = len(sentence.split())
        assert words.shape == (1, n_words)  # one score per whitespace word
        owner = _whitespace_word_of_tokens(tokenizer, sentence)
        assert owner == row["word_ids"]
        for w in range(n_words):
            tokens = [i for i, o in enumerate(owner) if o == w]
            split_words += len(tokens) > 1
            assert float(words[0, w]) == pytest.approx(float(token_map[0, tokens].sum()), abs=1e-6)
    assert split_words > 5  # the case exercised is real: many words are several subwords


def test_two_tokenizers_agree_on_the_words_with_a_whitespace_pre_tokenizer():
    bpe, wp = _fast_tokenizer("bpe", "whitespace"), _fast_tokenizer("wordpiece", "whitespace")
    ds_bpe, ds_wp = _tokenize(bpe), _tokenize(wp)
    different_tokens = 0
    for a, b in zip(ds_bpe, ds_wp, strict=True):
        different_tokens += a["input_ids"] != b["input_ids"]
        wa, wb = torch.tensor(a["word_ids"]), torch.tensor(b["word_ids"])
        assert int(wa.max()) == int(wb.max())
        # per-word totals of the same per-character attribution agree across the two tokenizers
        ones_a, ones_b = torch.ones(1, len(wa)), torch.ones(1, len(wb))
        assert to_words(ones_a, wa.unsqueeze(0)).sum() == (wa >= 0).sum()
        assert to_words(ones_b, wb.unsqueeze(0)).sum() == (wb >= 0).sum()
    assert different_tokens == len(SENTENCES)  # the tokenizations really differ


def test_punctuation_splitting_pre_tokenizer_refines_whitespace_words():
    """What holds when one tokenizer splits punctuation (BertPreTokenizer) and the other does not: word counts
    differ wherever there is punctuation ("don't" is 3 words vs 1), agree where there is none, and every
    punctuation-split word lies inside exactly one whitespace word, so summing the finer words into whitespace
    words (the same sum to_words does for subwords) brings both tokenizers to the same units."""
    ws, bert = _fast_tokenizer("bpe", "whitespace"), _fast_tokenizer("wordpiece", "bert")
    ds_ws, ds_bert = _tokenize(ws), _tokenize(bert)
    for row_ws, row_bert, sentence in zip(ds_ws, ds_bert, SENTENCES, strict=True):
        n_ws = max(row_ws["word_ids"]) + 1
        n_bert = max(row_bert["word_ids"]) + 1
        assert n_ws == len(sentence.split())
        if re.search(r"[^\w\s]", sentence):
            assert n_bert > n_ws
        else:
            assert n_bert == n_ws
        owner = _whitespace_word_of_tokens(bert, sentence)  # raises if a token straddled two words
        fine_to_coarse: dict[int, set[int]] = {}
        for fine, coarse in zip(row_bert["word_ids"], owner, strict=True):
            if fine >= 0:
                fine_to_coarse.setdefault(fine, set()).add(coarse)
        assert all(len(c) == 1 for c in fine_to_coarse.values())
        # an arbitrary map: finer words summed into whitespace words == tokens summed into whitespace words
        token_map = torch.randn(1, len(owner))
        fine_words = to_words(token_map, torch.tensor(row_bert["word_ids"]).unsqueeze(0))
        coarse_index = torch.tensor([[next(iter(fine_to_coarse[f])) for f in range(n_bert)]])
        via_fine = torch.zeros(1, n_ws).scatter_add(1, coarse_index, fine_words)
        direct = to_words(token_map, torch.tensor(owner).unsqueeze(0))
        torch.testing.assert_close(via_fine, direct)


def test_perturbation_never_samples_a_unit_the_cache_did_not_occlude():
    batch = hand_batch()
    occluded = torch.full((2, 7, 2), 0.5)
    occluded[0, [0, 2, 3]] = float("nan")  # a max_units cache occluded only unit 1 of example 0
    occluded[1, [0, 1]] = float("nan")  # ... and only unit 2 of example 1
    cached = {"perturbation": {"map": torch.ones(2, 7), "occluded": occluded}}
    term = PerturbationMatching(k=4, mix=0.5, mask_token_id=MASK, seed=0)
    for _ in range(10):
        term.augment(batch, cached)
        assert term._last_units[0].tolist() == [1] * 4 and term._last_units[1].tolist() == [2] * 4
    out = StepOutputs(batch=batch, student_logits=torch.zeros(2, 2),
                      extras={"cached": cached, "aug_logits": {"perturbation": torch.randn(8, 2)}})
    assert torch.isfinite(term(out))


def test_explanation_weight_warms_up_linearly_and_is_not_computed_at_zero():
    model, batch = _tiny_student(), _bert_batch(b=4)
    cache = {"gradient": _gradient_cache(batch)}
    grad, kd = GradientAlignment(weight=2.0), KDLoss(1.0)
    grad.ramp_steps = 4
    kd.ramp_steps = 4  # not an explanation term: the loop never ramps it, but the arithmetic is the same
    assert [grad.weight_at(s) for s in range(6)] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.0]
    out0 = forward(model, batch, [grad], None, cache, False, step=0)
    assert "student_map" not in out0.extras and total_loss([grad], out0)[1] == {}
    out2 = forward(model, batch, [grad], None, cache, False, step=2)
    loss, parts = total_loss([grad], out2)
    assert float(loss.detach()) == pytest.approx(1.0 * parts["gradient"], rel=1e-6)  # weight 2 at half the ramp
    assert GradientAlignment.explanation and not KDLoss.explanation


def test_explanation_weight_decays_linearly_to_zero_at_the_end_and_the_smaller_schedule_wins():
    grad = GradientAlignment(weight=2.0)
    grad.total_steps, grad.decay_steps = 8, 4
    # full weight until step 4 (= 8 - 4), then 2 * (8 - s) / 4: 1.5, 1.0, 0.5 on the last three steps
    assert [grad.weight_at(s) for s in range(9)] == [2.0, 2.0, 2.0, 2.0, 2.0, 1.5, 1.0, 0.5, 0.0]
    assert grad.active(7) and not grad.active(8)
    grad.ramp_steps = 6  # an overlapping warm-up: the smaller factor, min(s / 6, (8 - s) / 4)
    assert [grad.weight_at(s) for s in range(9)] == pytest.approx(
        [0.0, 1 / 3, 2 / 3, 1.0, 4 / 3, 1.5, 1.0, 0.5, 0.0])


def test_explain_warmup_is_checked_and_perturb_units_keys_the_cache():
    with pytest.raises(EgkdError, match="explain-warmup"):
        build_config(explain_warmup=1.5)
    with pytest.raises(EgkdError, match="explain-decay"):
        build_config(explain_decay=-0.1)
    with pytest.raises(EgkdError, match="explain-project.*fp16"):
        build_config(explain_project=True, mixed_precision="fp16")
    key = lambda spec: cache_key("teacher", "data", spec, 64)  # noqa: E731
    assert key(CacheSpec("perturbation", max_units=0)) == key(CacheSpec("perturbation"))  # old caches still hit
    assert key(CacheSpec("perturbation", max_units=8)) != key(CacheSpec("perturbation"))
    assert key(CacheSpec("gradient", max_units=8)) == key(CacheSpec("gradient"))  # only occlusion samples units
    cfg = RunConfig(method="egkd", explainer="perturbation", perturb_units=8)
    built = Built(_tiny_student(), type("Tok", (), {"mask_token_id": MASK, "pad_token_id": PAD})())
    assert [s.max_units for s in api.cache_specs(cfg, api.build_terms(cfg, built))] == [8]


def test_balanced_backward_caps_the_explanation_gradient_relative_to_the_task_gradient():
    model, batch = _tiny_student(), _bert_batch(b=4)
    cache = {"gradient": _gradient_cache(batch)}
    terms = [KDLoss(1.0), GradientAlignment(weight=50.0)]

    def losses():
        model.zero_grad()
        task, expl, _ = split_loss(terms, forward(model, batch, terms, None, cache, False, step=0))
        return task, expl

    def grads(loss):  # the two gradients by plain, separate backward passes
        loss.backward()
        return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]

    g_task, g_expl = grads(losses()[0]), grads(losses()[1])
    norm = lambda gs: float(torch.sqrt(sum((g**2).sum() for g in gs)))  # noqa: E731
    assert norm(g_expl) > norm(g_task)  # weight 50: the explanation gradient is the larger one
    for ratio in (0.5, 1e6):
        expected = min(1.0, ratio * norm(g_task) / norm(g_expl))
        logged = balanced_backward(model, *losses(), ratio)
        assert logged["explain_scale"] == pytest.approx(expected, rel=1e-6)
        for p, a, b in zip(model.parameters(), g_task, g_expl, strict=True):
            got = p.grad if p.grad is not None else torch.zeros_like(p)
            torch.testing.assert_close(got, a + expected * b, rtol=1e-5, atol=1e-7)
    assert expected == 1.0  # a large ratio leaves the plain sum


class _TwoLosses(nn.Module):
    """Linear losses with known gradients: task = a . p, explanation = b . p + e . q (q: no task gradient)."""

    def __init__(self) -> None:
        super().__init__()
        self.p, self.q = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(1))

    def losses(self, a, b, e=0.0):
        return (torch.tensor(a) * self.p).sum(), (torch.tensor(b) * self.p).sum() + e * self.q.sum()


@pytest.mark.parametrize(("b", "expected_p"), [
    ([-1.0, 1.0], [1.0, 1.0]),  # conflict: b loses its part along a, [-1, 1] - (-1 / 1) [1, 0] = [0, 1]
    ([1.0, 1.0], [2.0, 1.0]),  # no conflict: the plain sum a + b
])
def test_projection_drops_only_the_conflicting_part_of_the_explanation_gradient(b, expected_p):
    m = _TwoLosses()
    logged = balanced_backward(m, *m.losses([1.0, 0.0], b, e=3.0), project=True)
    torch.testing.assert_close(m.p.grad, torch.tensor(expected_p))
    torch.testing.assert_close(m.q.grad, torch.tensor([3.0]))  # no task gradient there: nothing to project
    cos = (b[0] + 0.0) / (1.0 * math.sqrt(b[0] ** 2 + b[1] ** 2 + 9.0))  # over p and q together
    assert logged == pytest.approx({"explain_cos": cos, "explain_scale": 1.0})


def test_projection_and_cap_together_cap_the_projected_gradient():
    m = _TwoLosses()
    a, b = [3.0, 4.0], [-3.0, 0.0]  # |a| = 5, a . b = -9: projected b = b + (9 / 25) a = [-1.92, 1.44], norm 2.4
    projected = torch.tensor(b) + 9 / 25 * torch.tensor(a)
    balanced_backward(m, *m.losses(a, b), ratio=0.24, project=True)  # cap 0.24 * 5 = 1.2: half of 2.4
    torch.testing.assert_close(m.p.grad, torch.tensor(a) + 0.5 * projected)
    assert float(projected.norm()) == pytest.approx(2.4)
    m.p.grad = None
    balanced_backward(m, *m.losses(a, b), ratio=0.0, project=False)  # neither: the plain sum
    torch.testing.assert_close(m.p.grad, torch.tensor(a) + torch.tensor(b))


def test_grad_norm_is_the_global_l2_norm_and_skips_unreached_parameters():
    grads = [torch.tensor([3.0, 0.0]), None, torch.tensor([[4.0]], dtype=torch.float16)]
    assert grad_norm(grads) == pytest.approx(5.0)
    assert grad_norm([None]) == 0.0 and grad_norm([]) == 0.0


def test_explain_grad_ratio_is_checked():
    with pytest.raises(EgkdError, match="explain-grad-ratio"):
        build_config(explain_grad_ratio=-1.0)
    with pytest.raises(EgkdError, match="fp16"):
        build_config(explain_grad_ratio=1.0, mixed_precision="fp16")
