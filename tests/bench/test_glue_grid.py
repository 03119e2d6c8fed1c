"""``egkd bench glue`` and ``egkd report`` end to end on a tiny teacher and a slice of the real RTE files."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import TINY_TEACHER_MODEL, cli_main, load_tensors

from egkd.bench.glue import (
    Grid,
    Unit,
    check_finished_run,
    check_tuning_agrees,
    chosen_settings,
    drop_stale,
    estimate,
    prerequisites,
    read_grids,
    record_grid,
    recorded,
    run_grid,
    split_students,
    stale_units,
    teacher_unit,
    trained_on_ig,
    tuning_tries,
    unit_lock,
)
from egkd.bench.records import append_record, from_line, read_results, to_line
from egkd.errors import EgkdError

pytestmark = pytest.mark.slow


def test_split_students_keeps_commas_inside_a_spec():
    assert split_students("layers:1,3,5,layers:2,5,bilstm") == ["layers:1,3,5", "layers:2,5", "bilstm"]
    assert split_students("cnn:filters=100,kernels=3-4-5;config:layers=2,hidden=256") == [
        "cnn:filters=100,kernels=3-4-5", "config:layers=2,hidden=256"]


def test_grid_lines_leave_out_a_grid_that_a_later_one_covers(tmp_path):
    """The same grid resumed with more seeds is quoted once, with its latest command; other grids stay."""
    from egkd.reports.glue import grid_lines

    def grid(tasks, seeds, methods=("kd", "egkd-gradient")):
        return Grid(out=tmp_path, tasks=tasks, methods=list(methods), students=["layers:1,3,5"], seeds=seeds)

    grids = [grid(["rte"], {"rte": 1}), grid(["rte"], {"rte": 3}), grid(["rte"], {"rte": 2}),
             grid(["cola"], {"cola": 1}, ["kd"]), grid(["rte", "cola"], {"rte": 1, "cola": 1}, ["ft"])]
    lines = grid_lines(grids, records={})
    assert len(lines) == 3
    assert "--seeds rte=3 " in lines[0] and "0 of 7 units finished" in lines[0]
    assert "--tasks cola --methods kd " in lines[1] and "--methods ft " in lines[2]
    # a grid run twice with the same seeds is quoted once
    assert len(grid_lines([grid(["rte"], {"rte": 2}), grid(["rte"], {"rte": 2})], records={})) == 1
    # units a later grid reran with its own settings are that grid's, not stale units of the earlier one
    old, new = grid(["rte", "cola"], {"rte": 1, "cola": 1}, ["kd"]), grid(["rte"], {"rte": 1}, ["kd"])
    new.epochs = 2.0
    records = {u.key: {"key": u.key, "options": new.options(u)} for u in new.units()}
    assert "ran with settings the grid has since changed" in grid_lines([old], records)[0]
    lines = grid_lines([old, new], records)  # (the smaller later grid is quoted through the larger one)
    assert len(lines) == 1 and "2 of 4 units finished" in lines[0] and "since changed" not in lines[0]


def test_grid_order_and_settings(tmp_path):
    grid = Grid(out=tmp_path, tasks=["sst2", "rte"], methods=["kd", "egkd-gradient"], students=["layers:1,3,5"],
                seeds={"rte": 2, "sst2": 1}, tune=True)
    keys = [u.key for u in grid.units()]
    assert keys[0] == "rte/teacher" and keys.index("sst2/teacher") > keys.index("rte/layers-1-3-5/kd/seed43")
    # tuning tries (3 per method) come before the seeds they decide; seed-major order afterwards
    assert keys[1:7] == [f"rte/layers-1-3-5/{m}/seed42/tune{i}" for m in ("kd", "egkd-gradient") for i in range(3)]
    assert keys[7:11] == ["rte/layers-1-3-5/kd/seed42", "rte/layers-1-3-5/egkd-gradient/seed42",
                          "rte/layers-1-3-5/kd/seed43", "rte/layers-1-3-5/egkd-gradient/seed43"]
    opts = grid.options(Unit("rte", "layers:1,3,5", "egkd-gradient", 43, setting=2))
    assert (opts["method"], opts["explainer"], opts["grad_weight"], opts["seed"]) == ("egkd", "gradient", 3.0, 43)
    assert opts["teacher"] == str(tmp_path / "teachers" / "rte")
    # the gradient family on IG maps: the same weights tried, the teacher's and the student's map set to IG
    ig = Grid(out=tmp_path, tasks=["rte"], methods=["egkd-gradient-ig"], students=["layers:1,3,5"], seeds={},
              tune=True).options(Unit("rte", "layers:1,3,5", "egkd-gradient-ig", 42, setting=0))
    assert (ig["teacher_explainer"], ig["student_explainer"], ig["grad_weight"]) == ("ig", "ig:steps=2", 0.3)
    assert "grad_fraction" not in ig and trained_on_ig(ig)  # the training default: a quarter of each batch
    # its lighter twin: the same maps and weights, the student's IG map on an eighth of each batch
    lite = Grid(out=tmp_path, tasks=["rte"], methods=["egkd-gradient-ig-lite"], students=["layers:1,3,5"], seeds={},
                tune=True).options(Unit("rte", "layers:1,3,5", "egkd-gradient-ig-lite", 42, setting=2))
    assert lite == {**ig, "grad_fraction": 0.125, "grad_weight": 3.0}
    assert trained_on_ig(lite)
    # its warm-up twin: the same maps and weights, the weight rising from 0 over the first half of the run
    warm = Grid(out=tmp_path, tasks=["rte"], methods=["egkd-gradient-ig-warmup"], students=["layers:1,3,5"],
                 seeds={}, tune=True).options(Unit("rte", "layers:1,3,5", "egkd-gradient-ig-warmup", 42, setting=0))
    assert warm == {**ig, "explain_warmup": 0.5} and "explain_warmup" not in ig
    with pytest.raises(EgkdError, match="unknown method"):
        Grid(out=tmp_path, tasks=["rte"], methods=["kd", "tinybert"], students=["layers:1"], seeds={})
    # randomly initialised students: a larger learning rate, and their explanation gradient capped
    small = Grid(out=tmp_path, tasks=["rte"], methods=["kd", "egkd-gradient"], students=["bilstm"], seeds={})
    egkd, kd = (small.options(Unit("rte", "bilstm", m, 42)) for m in ("egkd-gradient", "kd"))
    assert (egkd["learning_rate"], egkd["explain_grad_ratio"]) == (1e-3, 1.0) and "explain_grad_ratio" not in kd
    assert "explain_grad_ratio" not in grid.options(Unit("rte", "layers:1,3,5", "egkd-gradient", 42))
    # --learning-rate: every student's, not the teacher's; ft's tuning tries keep theirs; the command says it
    fast = Grid(out=tmp_path, tasks=["rte"], methods=["kd", "ft"], students=["layers:1,3,5", "bilstm"], seeds={},
                tune=True, learning_rate=3e-4)
    assert [fast.options(Unit("rte", s, "kd", 42))["learning_rate"] for s in fast.students] == [3e-4, 3e-4]
    assert fast.options(Unit("rte", "layers:1,3,5", "ft", 42, setting=0))["learning_rate"] == 5e-5
    # ft's tries scale with the student's own rate: a BiLSTM from scratch at a transformer's rates stayed at
    # the majority class on CoLA (MCC 0 at every try)
    assert [fast.options(Unit("rte", s, "ft", 42, setting=i))["learning_rate"]
            for s in fast.students for i in range(3)] == [5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3]
    assert fast.options(teacher_unit("rte"))["learning_rate"] == 5e-5
    assert " --learning-rate 0.0003 " in fast.command()
    assert Grid.from_description(tmp_path, fast.describe()).learning_rate == 3e-4


def test_a_grid_leaves_out_the_pairs_a_student_cannot_run(tmp_path, capsys):
    """PKD and AD-KD need the teacher's tokenizer: the issue's grid names bilstm beside them, so those pairs are left
    out (and said so) rather than failing once per unit."""
    grid = Grid(out=tmp_path, tasks=["rte"], methods=["kd", "pkd", "adkd"], students=["layers:1,3,5", "bilstm"],
                seeds={"rte": 1}, tune=True)
    students = {(u.student, u.method) for u in grid.units() if u.student}
    assert students == {("layers:1,3,5", "kd"), ("layers:1,3,5", "pkd"), ("layers:1,3,5", "adkd"), ("bilstm", "kd")}
    assert grid.unpaired().startswith("not run: pkd with bilstm, adkd with bilstm (")
    assert Grid(out=tmp_path, tasks=["rte"], methods=["pkd"], students=["layers:1,3,5"], seeds={}).unpaired() == ""
    assert cli_main("bench", "glue", "--tasks", "rte", "--methods", "kd,pkd", "--students", "cnn", "--seeds", "1",
                     "--out", str(tmp_path), "--dry-run") == 0
    shown = capsys.readouterr()
    out = shown.out + shown.err
    assert "not run: pkd with cnn" in out and "rte/cnn/kd/seed42" in out and "rte/cnn/pkd" not in out


def test_kd_tunes_alpha_on_a_regression_task(tmp_path):
    """Regression KD is an MSE between outputs, which no temperature enters: its three tries must differ there."""
    grid = Grid(out=tmp_path, tasks=["stsb", "rte"], methods=["kd", "egkd-gradient"], students=["layers:1,3,5"],
                seeds={}, tune=True)
    tries = {task: [grid.options(Unit(task, "layers:1,3,5", "kd", 42, setting=i)) for i in range(3)]
             for task in ("stsb", "rte")}
    assert [(o["alpha"], o["temperature"]) for o in tries["stsb"]] == [(0.5, 2.0), (0.9, 2.0), (1.0, 2.0)]
    assert [(o["alpha"], o["temperature"]) for o in tries["rte"]] == [(0.9, 1.0), (0.9, 2.0), (0.9, 4.0)]
    # the other methods tune their own weight on either kind of task
    assert [grid.options(Unit("stsb", "layers:1,3,5", "egkd-gradient", 42, setting=i))["grad_weight"]
            for i in range(3)] == [0.3, 1.0, 3.0]
    assert sum(u.setting is not None for u in grid.units()) == 12
    # and the seeds follow the best try's alpha
    done = {u.key: {"setting": u.setting, "score": 80.0 + (u.setting == 2), "key": u.key}
            for u in tuning_tries(grid, Unit("stsb", "layers:1,3,5", "kd", 43))}
    assert chosen_settings(grid, done, Unit("stsb", "layers:1,3,5", "kd", 43)) == {"alpha": 1.0}


def test_tune_alpha_gives_every_method_nine_tries_across_alpha(tmp_path):
    """--tune-alpha crosses each method's own three tries with KD's weight alpha; where alpha is already KD's own
    axis (regression) or absent (ft) another knob stands in, so that every method still gets nine distinct tries."""
    methods = ["kd", "ft", "egkd-gradient-ig"]
    grid = Grid(out=tmp_path, tasks=["stsb", "rte"], methods=methods, students=["layers:0,1,5"], seeds={"stsb": 2},
                tune=True, tune_alpha=True)

    def tries(task: str, method: str, keys: tuple[str, ...]) -> list[tuple]:
        return [tuple(grid.options(Unit(task, "layers:0,1,5", method, 42, setting=i))[k] for k in keys)
                for i in range(9)]

    ig = tries("stsb", "egkd-gradient-ig", ("grad_weight", "alpha"))
    assert ig == [(w, a) for w in (0.3, 1.0, 3.0) for a in (0.5, 0.9, 1.0)]
    assert tries("rte", "kd", ("temperature", "alpha")) == [(t, a) for t in (1.0, 2.0, 4.0) for a in (0.5, 0.9, 1.0)]
    assert tries("stsb", "kd", ("alpha", "learning_rate")) == [(a, lr) for a in (0.5, 0.9, 1.0)
                                                               for lr in (5e-5, 1e-4, 2e-4)]
    assert tries("stsb", "ft", ("learning_rate", "weight_decay")) == [(lr, wd) for lr in (5e-5, 1e-4, 2e-4)
                                                                      for wd in (0.0, 0.01, 0.1)]
    assert sum(u.kind == "tune" for u in grid.units()) == 2 * 3 * 9
    # a seed waits for all nine of its tries and takes the best one's setting
    seed = Unit("stsb", "layers:0,1,5", "egkd-gradient-ig", 43)
    assert len(prerequisites(grid, seed)) == 1 + 9
    done = {u.key: {"setting": u.setting, "score": 80.0 + (u.setting == 1), "key": u.key}
            for u in tuning_tries(grid, seed)}
    assert chosen_settings(grid, done, seed) == {"grad_weight": 0.3, "alpha": 0.9}
    # the command that resumes the grid keeps the flag, and so does the grid's description
    assert " --tune --tune-alpha " in grid.command()
    assert Grid.from_description(tmp_path, grid.describe()).tune_alpha
    with pytest.raises(EgkdError, match="add --tune"):
        Grid(out=tmp_path, tasks=["rte"], methods=["kd"], students=["layers:1"], seeds={}, tune_alpha=True)


def test_grids_tuned_with_and_without_tune_alpha_do_not_share_a_folder(tmp_path):
    """Their tries share unit keys (seed42/tune0 ...) but not settings: each would take the other's for its own."""
    plain = Grid(out=tmp_path, tasks=["rte"], methods=["kd"], students=["layers:1"], seeds={"rte": 1}, tune=True)
    record_grid(plain)
    wide = Grid(out=tmp_path, tasks=["rte"], methods=["kd"], students=["layers:1"], seeds={"rte": 1}, tune=True,
                tune_alpha=True)
    tried = Unit("rte", "layers:1", "kd", 42, setting=0)  # the plain grid's first try, finished
    append_record(tmp_path, {"key": tried.key, "kind": "tune", "setting": 0, "options": plain.options(tried)})
    with pytest.raises(EgkdError, match=r"run with --tune, whose tries for \(rte, layers:1, kd\) differ from this "
                                        r"one's \(--tune --tune-alpha\): give this grid its own --out"):
        run_grid(wide, rerun_stale=True)  # refused before --rerun-stale could set the plain grid's try aside
    assert list(read_results(tmp_path)) == [tried.key]
    assert [g.tune_alpha for g in read_grids(tmp_path)] == [False]  # and before it was recorded
    # another student or method shares no unit with it: allowed beside it
    check_tuning_agrees(Grid(out=tmp_path, tasks=["rte"], methods=["kd"], students=["layers:2"], seeds={"rte": 1},
                             tune=True, tune_alpha=True))


def test_tune_lr_crosses_every_method_with_the_learning_rate_and_shares_a_folder_only_where_tries_agree(tmp_path):
    """--tune-lr crosses each method's three tries with 0.5/1/2x the student's learning rate; KD on a regression
    task (alpha x lr) and ft (lr x weight decay) get the same nine as under --tune-alpha, so those grids may share
    a folder, and nothing else may."""
    def grid(**flags) -> Grid:
        return Grid(out=tmp_path, tasks=["stsb", "rte"], methods=["kd", "ft", "egkd-gradient-ig"],
                    students=["layers:0,1,5"], seeds={"stsb": 1}, tune=True, **flags)

    lr, alpha = grid(tune_lr=True), grid(tune_alpha=True)

    def tries(g: Grid, task: str, method: str, keys: tuple[str, ...]) -> list[tuple]:
        return [tuple(g.options(Unit(task, "layers:0,1,5", method, 42, setting=i))[k] for k in keys)
                for i in range(9)]

    rates = (5e-5, 1e-4, 2e-4)
    assert tries(lr, "stsb", "egkd-gradient-ig", ("grad_weight", "learning_rate", "alpha")) == [
        (w, r, 0.9) for w in (0.3, 1.0, 3.0) for r in rates]
    assert tries(lr, "rte", "kd", ("temperature", "learning_rate", "alpha")) == [
        (t, r, 0.9) for t in (1.0, 2.0, 4.0) for r in rates]
    for task, method in (("stsb", "kd"), ("rte", "ft"), ("stsb", "ft")):
        assert lr.tries(task, method, "layers:0,1,5") == alpha.tries(task, method, "layers:0,1,5")
    assert lr.tries("rte", "kd", "layers:0,1,5") != alpha.tries("rte", "kd", "layers:0,1,5")
    assert " --tune --tune-lr " in lr.command()
    assert Grid.from_description(tmp_path, lr.describe()).second_axis == "lr"
    with pytest.raises(EgkdError, match="choose one"):
        grid(tune_lr=True, tune_alpha=True)
    with pytest.raises(EgkdError, match="--tune-lr tries .* itself: drop --learning-rate"):
        grid(tune_lr=True, learning_rate=2e-4)
    with pytest.raises(EgkdError, match="--tune-lr widens --tune's tries: add --tune"):
        Grid(out=tmp_path, tasks=["rte"], methods=["kd"], students=["layers:1"], seeds={}, tune_lr=True)
    # KD on STS-B and ft tuned with --tune-alpha: a --tune-lr grid of the same may share their folder (and units) ...
    record_grid(Grid(out=tmp_path, tasks=["stsb"], methods=["kd", "ft"], students=["layers:0,1,5"],
                     seeds={"stsb": 1}, tune=True, tune_alpha=True))
    check_tuning_agrees(Grid(out=tmp_path, tasks=["stsb"], methods=["kd", "ft"], students=["layers:0,1,5"],
                             seeds={"stsb": 2}, tune=True, tune_lr=True))
    # ... but not a family, nor KD on a classification task, nor the plain --tune of either
    record_grid(alpha)
    for method, task in (("egkd-gradient-ig", "stsb"), ("kd", "rte")):
        with pytest.raises(EgkdError, match=fr"\({task}, layers:0,1,5, {method}\) differ .*--tune --tune-lr"):
            check_tuning_agrees(Grid(out=tmp_path, tasks=[task], methods=[method], students=["layers:0,1,5"],
                                     seeds={}, tune=True, tune_lr=True))
    with pytest.raises(EgkdError, match="differ"):
        check_tuning_agrees(Grid(out=tmp_path, tasks=["stsb"], methods=["kd"], students=["layers:0,1,5"],
                                 seeds={}, tune=True))


def test_dry_run_estimates_the_training_left_from_units_like_it(tmp_path):
    grid = Grid(out=tmp_path, tasks=["rte", "cola"], methods=["kd", "egkd-all", "pkd"],
                students=["layers:1,3,5", "layers:2,5"], seeds={"rte": 2, "cola": 1})

    def rec(task, student, method, seed, seconds):
        key = Unit(task, student, method, seed).key
        return key, {"key": key, "task": task, "student": student, "method": method, "train_seconds": seconds}

    done = dict([rec("rte", None, "ft", 42, 600), rec("cola", None, "ft", 42, 300),  # teachers: folders gone
                 rec("rte", "layers:1,3,5", "kd", 42, 100), rec("rte", "layers:1,3,5", "kd", 43, 140),
                 rec("cola", "layers:1,3,5", "kd", 42, 50), rec("cola", "layers:1,3,5", "egkd-all", 42, 150)])
    # teachers 600 + 300 (trained again); rte: egkd-all 3x KD's 120 s (its cost over KD's on CoLA) for both students
    # and seeds, 4 x 360; layers:2,5 KD like layers:1,3,5's, 2 x 120; cola layers:2,5: KD 50 and egkd-all 150;
    # PKD has nothing like it recorded: 6 units not estimated
    line = estimate(grid, done)
    assert line.startswith(f"16 unit(s) to train: more than {(900 + 1440 + 240 + 200) / 3600:.1f} hours")
    assert ("(2 timed by finished units of the same student and method, 4 by another student's, 4 by the method's "
            "cost over KD's on other tasks, 6 not estimated") in line
    assert estimate(Grid(out=tmp_path, tasks=["cola"], methods=["kd"], students=["layers:1,3,5"], seeds={},
                         teachers={"cola": str(tmp_path)}), done) == "nothing left to train"
    # a teacher is timed by teachers only: a gold-label student (method ft as well) says nothing of it
    ft_only = dict([rec("stsb", "layers:1,3,5", "ft", 42, 80)])
    line = estimate(Grid(out=tmp_path, tasks=["stsb"], methods=["ft"], students=["layers:2,5"], seeds={}), ft_only)
    assert "1 by another student's, 1 not estimated" in line
    # nothing like it recorded at all: no number rather than "more than 0.0 hours"
    line = estimate(Grid(out=tmp_path, tasks=["rte"], methods=["adkd"], students=["layers:1,3,5"], seeds={},
                         teachers={"rte": str(tmp_path)}), done)
    assert line == "1 unit(s) to train: no estimate, nothing like them recorded yet"


def test_an_option_missing_from_an_older_record_counts_as_its_default():
    assert recorded({"alpha": 0.5}, "alpha") == 0.5
    assert recorded({}, "explain_grad_ratio") == 0.0 and recorded({}, "perturb_units") == 0
    assert recorded({}, "no_such_option") is None


@pytest.fixture(scope="module")
def grid_out(glue_dir, minilm_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "results"
    args = ["bench", "glue", "--tasks", "rte", "--methods", "kd,egkd-gradient", "--students", "layers:1",
            "--seeds", "2", "--teacher-model", TINY_TEACHER_MODEL, "--max-train-examples", "48",
            "--max-eval-examples", "40", "--max-seq-length", "32", "--epochs", "1", "--explain-examples", "16",
            "--data-dir", glue_dir, "--out", out]
    assert cli_main(*args) == 0
    return out, args


def _records(out):
    return [from_line(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_grid_writes_one_record_per_unit(grid_out):
    out, _ = grid_out
    recs = _records(out)
    assert [r["key"] for r in recs] == ["rte/teacher", "rte/layers-1/kd/seed42", "rte/layers-1/egkd-gradient/seed42",
                                        "rte/layers-1/kd/seed43", "rte/layers-1/egkd-gradient/seed43"]
    student = recs[2]
    assert student["options"]["explainer"] == "gradient" and student["seed"] == 42
    assert len(student["predictions"]) == len(student["idx"]) == 40
    assert "labels" not in student  # gold labels are read from the GLUE files when the report runs
    assert -1.0 <= student["consistency"] <= 1.0 and student["parameters"] < student["teacher_parameters"]
    assert student["cpu_seconds_per_epoch"] > 0 and student["seconds_per_epoch"] > 0
    # the record's score is the run's own metrics.json, and its predictions are the run's prediction file
    run = out / student["run"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["accuracy"] == student["score"]
    # only the student's faithfulness is scored: the teacher's is the same for every unit and is not recorded
    assert set(metrics["explanations"]["faithfulness"]) == {"student"}
    assert student["comprehensiveness"] == metrics["explanations"]["faithfulness"]["student"]["comprehensiveness"]
    shuffled = metrics["explanations"]["faithfulness"]["student"]["random_order"]
    assert student["comprehensiveness_random"] == shuffled["comprehensiveness"] is not None
    assert (run / "model.safetensors").is_file()
    # a recorded unit never trains again: its resume checkpoint is gone, the teacher's too
    assert not (run / "checkpoints").exists() and not (out / "teachers" / "rte" / "checkpoints").exists()
    # the two seeds are two trainings (data order, dropout), not one run recorded twice
    w42, w43 = (load_tensors(out / recs[i]["run"] / "model.safetensors") for i in (1, 3))
    assert any(not torch.equal(w42[k], w43[k]) for k in w42)


def test_rerun_runs_nothing_and_refuses_other_settings(grid_out, capsys):
    out, args = grid_out
    before = (out / "results.jsonl").read_text()
    assert cli_main(*args) == 0
    shown = capsys.readouterr()
    assert "5 of 5 units done, 0 to run" in shown.out + shown.err
    assert (out / "results.jsonl").read_text() == before
    # the same folder with other settings is refused before anything runs
    changed = list(args)
    changed[changed.index("--epochs") + 1] = "2"
    assert cli_main(*changed) == 2
    err = capsys.readouterr().err
    assert "run with other settings" in err and "epochs" in err
    assert (out / "results.jsonl").read_text() == before
    # a finished run whose record was lost (a crash mid-write cut the last line) is recorded again, not retrained
    lines = before.splitlines()
    run = out / json.loads(lines[-1])["run"]
    mtime = (run / "model.safetensors").stat().st_mtime_ns
    (out / "results.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:40])
    assert cli_main(*args) == 0
    assert list(read_results(out)) == [json.loads(x)["key"] for x in lines]
    assert (run / "model.safetensors").stat().st_mtime_ns == mtime
    # and a run folder trained with other settings is never taken for the unit
    with pytest.raises(EgkdError, match=r"other settings \(epochs\)"):
        check_finished_run(run, {"epochs": 2.0, "seed": 43})


def test_rerun_stale_sets_changed_units_aside_and_runs_them_again(grid_out, capsys):
    out, args = grid_out
    recs = list(read_results(out).values())
    old = json.loads(json.dumps(recs[-1]))  # rte/layers-1/egkd-gradient/seed43: pretend it ran with another alpha
    old["options"]["alpha"] = 0.5
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*recs[:-1], old]))
    assert cli_main(*args) == 2
    assert "1 unit(s) run with other settings" in capsys.readouterr().err
    assert cli_main(*args, "--dry-run") == 0
    assert f"| {old['key']} | student | stale (alpha): --rerun-stale reruns it |" in "".join(capsys.readouterr())
    assert cli_main(*args, "--rerun-stale") == 0
    now = read_results(out)
    assert list(now) == [r["key"] for r in recs] and now[old["key"]]["options"]["alpha"] == 0.9
    kept = [json.loads(x) for x in (out / "stale.jsonl").read_text().splitlines()]
    assert [(r["key"], r["options"]["alpha"]) for r in kept] == [(old["key"], 0.5)]
    aside = out / "stale" / old["key"] / "model.safetensors"  # the old run folder set aside
    # trained again: a new model file, written after the old one (the records' "finished" stamps have
    # one-second resolution, which a fast machine's rerun can share with the first run)
    assert (out / now[old["key"]]["run"] / "model.safetensors").stat().st_mtime_ns > aside.stat().st_mtime_ns


def test_setting_a_stale_seed_aside_keeps_its_tuning_tries(tmp_path):
    """A tuned seed's folder holds its tuning tries (runs/<key>/tune<i>), units of their own that the seed's record
    may point at: setting the stale seed aside moves its own files only (a grid rerun with --rerun-stale once moved
    the whole folder, and the kept tries' records pointed at nothing)."""
    grid = Grid(out=tmp_path, tasks=["rte"], methods=["kd"], students=["layers:1"], seeds={"rte": 1}, tune=True)
    seed = "rte/layers-1/kd/seed42"
    run = tmp_path / "runs" / seed
    for sub in ("", "tune0", "tune1", "tune2"):
        (run / sub).mkdir(parents=True, exist_ok=True)
        (run / sub / "model.safetensors").write_text(sub or "seed")
    tries = [{"key": f"{seed}/tune{i}", "run": f"runs/{seed}/tune{i}"} for i in range(3)]
    records = [{"key": seed, "run": f"runs/{seed}"}, *tries]  # the seed ran before tuning, in its own folder
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    drop_stale(grid, [(seed, ["temperature"]), (f"{seed}/tune1", ["epochs"])])  # and one try is stale too
    assert list(read_results(tmp_path)) == [f"{seed}/tune0", f"{seed}/tune2"]
    assert [(run / t / "model.safetensors").read_text() for t in ("tune0", "tune2")] == ["tune0", "tune2"]
    aside = tmp_path / "stale" / seed
    assert (aside / "model.safetensors").read_text() == "seed" and not (run / "model.safetensors").exists()
    assert (aside / "tune1" / "model.safetensors").read_text() == "tune1" and not (run / "tune1").exists()
    assert not (aside / "tune0").exists() and not (aside / "tune2").exists()


def test_report_renders_seeds_bootstrap_targets_and_plots(grid_out, glue_dir, tmp_path):
    out, _ = grid_out
    page = tmp_path / "docs" / "results.md"  # a folder that does not exist yet
    assert cli_main("report", out, "--out", page, "--resamples", "200", "--data-dir", glue_dir) == 0
    text = page.read_text()
    assert "## RTE (dev, main metric accuracy)" in text and "| (teacher) | ft | 1 |" in text
    assert "| (majority class) | - | - |" in text
    row = next(line for line in text.splitlines() if line.startswith("| layers:1 | egkd-gradient |") and "±" in line)
    assert "[" in row and " ± " in row  # two seeds: mean ± std, a bootstrap interval vs KD
    assert row.rstrip(" |").endswith("x (CPU)")  # cost vs KD from CPU seconds: every run recorded them here
    # the summary on top repeats the row's mean and its difference to KD, KD first
    summary = text.split("## Summary: student `layers:1`")[1].split("## Protocol")[0]
    assert summary.index("| kd |") < summary.index("| egkd-gradient |")
    mean, delta = row.split(" | ")[3].split(" ± ")[0].strip("*"), row.split(" | ")[4].split(" [")[0]
    assert f"| egkd-gradient | {mean} ({delta}" in summary
    # the grid run into the folder is quoted with its coverage (the refused one is not)
    assert "--seeds rte=2 --teacher-model config:layers=2,hidden=64,heads=2 --explain-examples 16" in text
    assert text.count("units finished") == 1 and "5 of 5 units finished" in text
    assert "## Targets" in text and "consistency >= 0.6 on every task" in text
    coverage = text.split("## Coverage")[1].split("##")[0]
    assert "| layers:1 | egkd-gradient | 2 | 2 |" in coverage and "| layers:1 | kd | 2 | 2 |" in coverage
    assert "Per family: egkd-gradient ahead of KD on " in text and "1 of the tasks where both ran" in text
    # AOPC beside the random erasure order, averaged over the seeds that have both, the gain their difference
    erasure = text.split("## Faithfulness against a random erasure order")[1].split("##")[0]
    recs = [r for r in read_results(out).values() if r.get("method") == "egkd-gradient" and r["kind"] == "student"]
    assert len(recs) == 2 and all(r["comprehensiveness_random"] is not None for r in recs)
    comp = sum(r["comprehensiveness"] for r in recs) / 2
    comp_r = sum(r["comprehensiveness_random"] for r in recs) / 2
    assert (f"| rte | layers:1 | egkd-gradient | 2 | {comp:.3f} | {comp_r:.3f} | {comp - comp_r:+.3f} |"
            in erasure)
    assert "## One-off teacher cache cost" in text
    caches = text.split("## One-off teacher cache cost")[1].split("##")[0]
    gradient = next(line for line in caches.splitlines() if line.startswith("| rte | gradient, explainer gxi, target "
                                                                            "pred | 48 |"))
    assert "| rte/layers-1/egkd-gradient/seed42 (" in gradient  # the first unit that used it, and when
    logits = next(line for line in caches.splitlines() if line.startswith("| rte | logits, target pred | 48 |"))
    assert "| rte/layers-1/kd/seed42 (" in logits
    for name in ("results-metric-vs-cost.png", "results-metric-vs-consistency.png", "results-rte.csv"):
        assert (page.parent / name).stat().st_size > 0, name


def test_report_versus_compares_two_methods_directly_with_the_same_bootstrap(grid_out, glue_dir, tmp_path, capsys):
    out, _ = grid_out
    page = tmp_path / "page.md"
    assert cli_main("report", out, "--out", page, "--resamples", "200", "--data-dir", glue_dir,
                    "--versus", "egkd-gradient:kd", "--versus", "kd:egkd-gradient") == 0
    text = page.read_text()
    ci = re.compile(r"([+-]\d+\.\d+) \[([+-]\d+\.\d+), ([+-]\d+\.\d+)\]")
    def line(part: str, start: str) -> str:
        return next(row for row in part.splitlines() if row.startswith(start))

    table = line(text.split("## RTE")[1], "| layers:1 | egkd-gradient |")
    section = text.split("## Paired comparisons (`--versus`)")[1].split("\n## ")[0]
    forward = line(section, "| rte | layers:1 | egkd-gradient | kd | 2 |")
    backward = line(section, "| rte | layers:1 | kd | egkd-gradient | 2 |")
    # A against KD is the task table's own interval; B against A the same resamples, negated
    assert ci.search(forward).groups() == ci.search(table).groups()
    d, low, high = map(float, ci.search(forward).groups())
    assert tuple(map(float, ci.search(backward).groups())) == pytest.approx((-d, -high, -low), abs=0.011)
    recs = [r for r in read_results(out).values() if r["kind"] == "student"]
    score = {m: sum(r["score"] for r in recs if r["method"] == m) / 2 for m in ("kd", "egkd-gradient")}
    assert f"| {score['egkd-gradient']:.2f} / {score['kd']:.2f} |" in forward
    assert (page.parent / "page-versus.csv").stat().st_size > 0
    capsys.readouterr()
    assert cli_main("report", out, "--data-dir", glue_dir, "--versus", "egkd-gradient:pkd") == 2
    assert cli_main("report", out, "--data-dir", glue_dir, "--versus", "kd") == 2
    err = capsys.readouterr().err
    assert "no runs of pkd in these results; methods: egkd-gradient, kd" in err
    assert "--versus takes METHOD:METHOD" in err and "Traceback" not in err


def test_report_merges_folders_and_refuses_a_unit_in_two(grid_out, glue_dir, tmp_path, capsys):
    """Seed 43 as if run on a GPU machine into a second folder: one page, both seeds pooled, devices said."""
    out, _ = grid_out
    cpu, gpu = tmp_path / "cpu", tmp_path / "gpu"
    for folder in (cpu, gpu):
        folder.mkdir()
        (folder / "grids.json").write_text((out / "grids.json").read_text())
    lines = (out / "results.jsonl").read_text().splitlines()
    on_gpu = [r for r in map(json.loads, lines) if r["seed"] == 43 and r["kind"] == "student"]
    assert on_gpu
    for rec in on_gpu:
        rec["machine"]["gpu"] = "Test GPU"
    (cpu / "results.jsonl").write_text("\n".join(line for line in lines if json.loads(line)["key"]
                                                 not in {r["key"] for r in on_gpu}) + "\n")
    (gpu / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in on_gpu))
    page = tmp_path / "page.md"
    assert cli_main("report", cpu, gpu, "--out", page, "--resamples", "200", "--data-dir", glue_dir) == 0
    text = page.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| layers:1 | egkd-gradient |") and "±" in line)
    assert "| 2 |" in row  # seed 42 from one folder, seed 43 from the other
    assert f"Grids run into `{cpu}`" in text and f"Grids run into `{gpu}`" in text
    assert "units ran on several devices" in text and "+ Test GPU" in text
    capsys.readouterr()
    assert cli_main("report", cpu, out, "--data-dir", glue_dir) == 2  # the CPU units are in both folders
    assert cli_main("report", cpu, tmp_path, "--data-dir", glue_dir) == 2
    err = capsys.readouterr().err
    assert "is in" in err and "and in" in err and "has no results.jsonl" in err and "Traceback" not in err


def test_bad_grid_flags_are_one_line_errors(tmp_path, capsys):
    assert cli_main("bench", "glue", "--tasks", "rte,qqq", "--dry-run", "--out", tmp_path) == 2
    assert cli_main("bench", "glue", "--seeds", "rte=0", "--dry-run", "--out", tmp_path) == 2
    assert cli_main("bench", "glue", "--learning-rate", "0", "--dry-run", "--out", tmp_path) == 2
    err = capsys.readouterr().err
    assert "unknown task(s) qqq" in err and "--seeds takes N or task=N with N >= 1" in err
    assert "--learning-rate must be positive, got 0" in err
    assert "Traceback" not in err
    assert cli_main("report", tmp_path) == 2  # nothing finished there yet


def test_one_seed_shows_its_value_without_a_spread():
    from egkd.reports.glue import _mean_std

    assert _mean_std([80.0]) == "80.00"
    assert _mean_std([80.0, 82.0]) == "81.00 ± 1.41"  # sample std, as statistics.stdev


def test_tuning_reuses_the_run_at_the_default_setting_and_fixes_the_seeds(grid_out, tmp_path, capsys):
    """`--tune` on a folder whose first seed already ran: the try at the default temperature is that run (no
    training), the others train; then the first seed takes the winner's settings (its run, when not the default)."""
    import shutil

    out = tmp_path / "results"
    shutil.copytree(grid_out[0], out)
    args = [a if a != grid_out[0] else out for a in grid_out[1]]
    args[args.index("kd,egkd-gradient")] = "kd"
    args[args.index("--seeds") + 1] = "1"
    capsys.readouterr()
    assert cli_main(*args, "--tune", "--dry-run") == 0
    plan = "".join(capsys.readouterr())  # the plan is console output (stderr)
    assert "| rte/layers-1/kd/seed42/tune1 | tune | reuses rte/layers-1/kd/seed42 |" in plan
    assert "| rte/layers-1/kd/seed42/tune0 | tune | pending |" in plan
    code = cli_main(*args, "--tune")
    said = " ".join("".join(capsys.readouterr()).split())  # progress on stderr, the summary on stdout
    recs = read_results(out)
    tries = [recs[f"rte/layers-1/kd/seed42/tune{i}"] for i in range(3)]
    assert [t["options"]["temperature"] for t in tries] == [1.0, 2.0, 4.0]
    first = recs["rte/layers-1/kd/seed42"]
    assert tries[1]["same_as"] == first["key"] and tries[1]["score"] == first["score"]
    assert not (out / "runs" / "rte/layers-1/kd/seed42/tune1").exists()  # not trained again
    assert (out / "runs" / "rte/layers-1/kd/seed42/tune0" / "model.safetensors").is_file()
    best = max(tries, key=lambda t: t["score"])
    # the first seed ran before tuning: if another setting won, the run says so and counts it as left to do
    retuned = best is not tries[1]
    assert code == 0 and f"{int(retuned)} unit(s) left" in said
    assert retuned == ("tuning chose other settings for 1 finished unit(s)" in said)
    from egkd.reports.glue import grid_lines

    line = grid_lines(read_grids(out)[-1:], read_results(out))[0]
    assert retuned == ("1 of them ran with settings the grid has since changed" in line)
    assert cli_main(*args, "--tune", "--rerun-stale") == 0
    recs = read_results(out)
    first = recs["rte/layers-1/kd/seed42"]
    assert first["options"]["temperature"] == best["options"]["temperature"]
    # every record still points at a finished run: setting the seed aside left its tuning tries in place
    assert all((out / recs[t["key"]]["run"] / "model.safetensors").is_file() for t in (first, tries[0], tries[2]))
    if retuned:
        assert first["same_as"] == best["key"] and first["score"] == best["score"]


def test_tuning_table_marks_the_winner_and_counts_seeds_at_its_setting():
    """Per (task, student, method): every try's first-seed dev score, the best one chosen (the runner's rule),
    and how many seed runs carry the chosen setting (the rest ran before tuning and wait for --rerun-stale)."""
    from egkd.reports.glue import tuning_rows

    def rec(kind, seed, setting, score, t):
        key = f"rte/layers-1/kd/seed{seed}" + (f"/tune{setting}" if kind == "tune" else "")
        return key, {"key": key, "kind": kind, "task": "rte", "student": "layers:1", "method": "kd", "seed": seed,
                     "setting": setting, "score": score, "options": {"temperature": t}}

    records = dict([rec("tune", 42, 0, 55.0, 1.0), rec("tune", 42, 1, 54.0, 2.0), rec("tune", 42, 2, 57.5, 4.0),
                    rec("student", 42, None, 57.5, 4.0), rec("student", 43, None, 53.0, 2.0)])
    header, rows = tuning_rows(records)
    assert rows == [["rte", "layers:1", "kd",
                     "temperature=1.0: 55.00; temperature=2.0: 54.00; **temperature=4.0: 57.50**", "1 of 2"]]
    del records["rte/layers-1/kd/seed42/tune2"]  # a try missing: nothing chosen yet
    assert tuning_rows(records)[1][0][3:] == ["temperature=1.0: 55.00; temperature=2.0: 54.00; temperature=4.0: "
                                              "not run", "-"]
    # a tie goes to the first try in grid order, whatever order the records came in (as the runner decides)
    tied = {k: {**r, "score": 56.0} for k, r in reversed(list(records.items())) if r["kind"] == "tune"}
    tied["rte/layers-1/kd/seed42/tune2"] = {**records["rte/layers-1/kd/seed42/tune0"], "setting": 2, "score": 56.0,
                                            "key": "rte/layers-1/kd/seed42/tune2", "options": {"temperature": 4.0}}
    assert tuning_rows(tied)[1][0][3].startswith("**temperature=1.0: 56.00**")
    # on a regression task KD's tries are alphas now: tries recorded at other temperatures are stale, not alphas
    stsb = {k.replace("rte", "stsb"): {**r, "key": r["key"].replace("rte", "stsb"), "task": "stsb",
                                       "options": {"temperature": r["options"]["temperature"], "alpha": 0.9}}
            for k, r in records.items()}
    assert tuning_rows(stsb)[1][0][3:] == ["alpha=0.5: not run (stale try); alpha=0.9: 54.00; alpha=1.0: not run",
                                           "-"]
    # --tune-alpha's nine tries are read as the nine (temperature x alpha), the winner marked among them
    wide = {}
    for i, (t, a) in enumerate((t, a) for t in (1.0, 2.0, 4.0) for a in (0.5, 0.9, 1.0)):
        key, r = rec("tune", 42, i, 50.0 + i % 4, t)
        wide[key] = {**r, "options": {"temperature": t, "alpha": a}}
    cells = tuning_rows(wide)[1][0][3].split("; ")
    assert len(cells) == 9 and cells[1] == "temperature=1.0, alpha=0.9: 51.00"
    assert [c for c in cells if c.startswith("**")] == ["**temperature=2.0, alpha=0.5: 53.00**"]  # 3 and 7 tie
    # --tune-lr's nine are read as temperature x learning rate (alpha stays at its default), not as --tune-alpha's
    by_lr = {}
    for i, (t, lr) in enumerate((t, lr) for t in (1.0, 2.0, 4.0) for lr in (5e-5, 1e-4, 2e-4)):
        key, r = rec("tune", 42, i, 50.0 + i % 4, t)
        by_lr[key] = {**r, "options": {"temperature": t, "alpha": 0.9, "learning_rate": lr}}
    cells = tuning_rows(by_lr)[1][0][3].split("; ")
    assert cells[0] == "temperature=1.0, learning_rate=5e-05: 50.00" and "alpha" not in "".join(cells)
    assert [c for c in cells if c.startswith("**")] == ["**temperature=2.0, learning_rate=5e-05: 53.00**"]


def test_a_unit_another_process_runs_is_skipped_with_what_waits_for_it(grid_out, tmp_path, capsys):
    """Two processes sharing a results folder: each trains what the other does not hold, and a seed whose tuning
    try is held elsewhere waits for it instead of failing."""
    import shutil

    out = tmp_path / "results"
    shutil.copytree(grid_out[0], out)
    args = [a if a != grid_out[0] else out for a in grid_out[1]]
    args[args.index("kd,egkd-gradient")] = "kd"
    args[args.index("--seeds") + 1] = "3"
    held = Unit("rte", "layers:1", "kd", 42, setting=0)  # "the other process" runs the first tuning try
    grid = Grid(out=out, tasks=["rte"], methods=["kd"], students=["layers:1"], seeds={"rte": 3}, tune=True)
    assert prerequisites(grid, Unit("rte", "layers:1", "kd", 43)) == [
        "rte/teacher", *(Unit("rte", "layers:1", "kd", 42, setting=i).key for i in range(3))]
    capsys.readouterr()
    with unit_lock(out, held) as mine:
        assert mine
        assert cli_main(*args, "--tune", "--dry-run") == 0
        assert f"| {held.key} | tune | running in another process |" in "".join(capsys.readouterr())
        assert cli_main(*args, "--tune", "--no-wait") == 0
        said = " ".join("".join(capsys.readouterr()).split())
    recs = read_results(out)
    assert held.key not in recs and "rte/layers-1/kd/seed42/tune2" in recs  # the free try ran
    assert f"{held.key} is being run by another process: skipped" in said
    assert f"rte/layers-1/kd/seed44 waits for {held.key}, which another process is running: skipped" in said
    assert "2 unit(s) skipped" in said and not (out / "failures.jsonl").exists()
    # once the other process lets go, the same command runs what was skipped
    assert cli_main(*args, "--tune", "--rerun-stale") == 0
    recs = read_results(out)
    assert held.key in recs and recs["rte/layers-1/kd/seed44"]["kind"] == "student"


def test_a_process_waits_for_units_another_holds_then_finishes_the_grid(grid_out, tmp_path, capsys, monkeypatch):
    """By default a second process does not stop at a unit held elsewhere: it waits until the lock is let go and
    runs what is still missing (here the holder lets go without finishing it, as a crashed process would)."""
    import shutil
    import threading
    import time

    out = tmp_path / "results"
    shutil.copytree(grid_out[0], out)
    grid = Grid(out=out, tasks=["rte"], methods=["kd"], students=["layers:1"], seeds={"rte": 3}, tune=True,
                data_dir=str(grid_out[1][grid_out[1].index("--data-dir") + 1]), teacher_model=TINY_TEACHER_MODEL,
                max_train_examples=48, max_eval_examples=40, max_seq_length=32, epochs=1, explain_examples=16)
    held = Unit("rte", "layers:1", "kd", 42, setting=0)
    taken, release, naps = threading.Event(), threading.Event(), []

    def other_process():
        with unit_lock(out, held) as mine:
            assert mine
            taken.set()
            release.wait(120)

    def nap(seconds):  # the "other process" lets go only once this one has started to wait
        naps.append(seconds)
        release.set()
        holder.join()

    holder = threading.Thread(target=other_process)
    holder.start()
    assert taken.wait(10)
    monkeypatch.setattr(time, "sleep", nap)
    capsys.readouterr()
    left, failed = run_grid(grid, rerun_stale=True, poll=0.2)
    said = " ".join("".join(capsys.readouterr()).split())
    assert naps == [0.2]  # it waited (one poll), then went on
    assert f"{held.key} is being run by another process: skipped" in said
    assert f"rte/layers-1/kd/seed44 waits for {held.key}, which another process is running: skipped" in said
    assert f"waiting for 1 unit(s) another process is running ({held.key}) before the 1 that wait" in said
    recs = read_results(out)
    assert held.key in recs and recs["rte/layers-1/kd/seed44"]["kind"] == "student"  # the waiting seed ran
    assert "skipped because another process" not in said and not (out / "failures.jsonl").exists()
    # all that is left is what tuning changed for the seeds the untuned grid had run (--rerun-stale reruns them)
    assert (left, failed) == (len(stale_units(grid, recs)), 0)


def test_a_missing_teacher_is_trained_again_and_used_only_if_it_reproduces_its_record(grid_out, tmp_path, capsys):
    """Teachers are not committed: a fresh machine that goes on with a grid trains them again, and its students
    may learn from the new one only if it is the recorded teacher (same dev predictions)."""
    import shutil

    out = tmp_path / "results"
    shutil.copytree(grid_out[0], out)
    args = [a if a != grid_out[0] else out for a in grid_out[1]]
    before = (out / "results.jsonl").read_text()
    shutil.rmtree(out / "teachers" / "rte")
    capsys.readouterr()
    assert cli_main(*args, "--dry-run") == 0
    assert "| rte/teacher | teacher | done, folder missing: trained again" in "".join(capsys.readouterr())
    assert cli_main(*args) == 0
    assert (out / "teachers" / "rte" / "model.safetensors").is_file()
    assert (out / "results.jsonl").read_text() == before  # reproduced: the old record stands, no second line
    # a rebuilt teacher that differs (here: the record is made to differ) is set aside and refused
    recs = list(read_results(out).values())
    recs[0]["predictions"][0] = 1 - recs[0]["predictions"][0]
    *recs, left = recs  # its last student left to run: it must not run
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    shutil.rmtree(out / "teachers" / "rte")
    shutil.rmtree(out / left["run"])
    assert cli_main(*args) == 1  # the grid says what failed and how many units are left, and exits 1
    said = " ".join("".join(capsys.readouterr()).split())
    assert "dev predictions differ from the recorded teacher's" in said and "3 of 5 units done, 1 failed" in said
    assert "2 unit(s) left" in said
    assert not (out / "teachers" / "rte").exists() and list((out / "stale").glob("rte/teacher-rebuilt-*"))
    assert list(read_results(out)) == [r["key"] for r in recs]  # nothing recorded, the student not trained
    assert not (out / left["run"]).exists()


def test_a_rebuilt_regression_teacher_may_differ_by_float_noise_only(tmp_path):
    from types import SimpleNamespace

    from egkd.bench.glue import check_rebuilt_teacher

    grid = SimpleNamespace(out=tmp_path)
    old = {"key": "stsb/teacher", "idx": [0, 1, 2], "predictions": [0.5, 2.25, 4.0], "score": 84.83}
    noisy = {**old, "predictions": [0.5002, 2.2498, 4.0], "run": "teachers/stsb"}
    check_rebuilt_teacher(grid, old, noisy)  # within float32 noise: used as it is
    (tmp_path / "teachers" / "stsb").mkdir(parents=True)
    other = {**noisy, "predictions": [0.5, 2.3, 4.0]}
    with pytest.raises(EgkdError, match="dev predictions differ"):
        check_rebuilt_teacher(grid, old, other)
    assert not (tmp_path / "teachers" / "stsb").exists() and list((tmp_path / "stale").glob("stsb/teacher-rebuilt-*"))


def test_waiting_ends_at_once_when_a_skipped_unit_has_finished_meanwhile(grid_out, monkeypatch):
    """A tuned method's seeds skipped while its tuning ran elsewhere must not wait for an unrelated unit that
    another process still holds: a finished skipped unit starts the next pass at once."""
    from egkd.bench import glue

    out = grid_out[0]
    grid = read_grids(out)[-1]
    units = list(grid.units())
    monkeypatch.setattr(glue, "running_elsewhere", lambda out, unit: unit.key == units[-1].key)  # still held
    monkeypatch.setattr(glue.time, "sleep", lambda s: pytest.fail("waited although a skipped unit had finished"))
    assert glue.wait_for_others(grid, units, {units[1].key, units[-1].key}, None, poll=30) is True
    # with nothing finished, it waits for the held one (here: until the deadline has passed)
    monkeypatch.setattr(glue, "read_results", lambda out: {})
    monkeypatch.setattr(glue.time, "sleep", lambda s: None)
    assert glue.wait_for_others(grid, units, {units[1].key, units[-1].key}, 0.0, poll=30) is False


def test_a_teacher_trained_again_elsewhere_is_waited_for_although_it_is_recorded(grid_out, tmp_path, monkeypatch):
    """On a fresh machine a teacher is recorded but its folder is gone; while another process trains it again, a
    second process must wait for it, not take the record for "finished" and start over at once, forever."""
    import shutil

    from egkd.bench import glue

    out = tmp_path / "results"
    shutil.copytree(grid_out[0], out)
    grid = read_grids(out)[-1]
    grid.out = out
    units = list(grid.units())
    teacher = next(u for u in units if u.student is None)
    aside = tmp_path / "teacher-aside"
    shutil.move(teacher.run_dir(out), aside)
    assert teacher.key in read_results(out) and glue.finished_since(grid, units, {teacher.key}) == set()
    naps = []

    def nap(seconds):  # meanwhile the other process finishes the teacher and lets go of it
        naps.append(seconds)
        shutil.move(aside, teacher.run_dir(out))

    monkeypatch.setattr(glue, "running_elsewhere", lambda out, unit: unit.key == teacher.key and not naps)
    monkeypatch.setattr(glue.time, "sleep", nap)
    assert glue.wait_for_others(grid, units, {teacher.key}, None, poll=30) is True
    assert naps == [30]  # it waited for the teacher instead of returning at once
    assert glue.finished_since(grid, units, {teacher.key}) == {teacher.key}


def test_protocol_states_the_learning_rate_a_grid_was_run_with(tmp_path):
    from egkd.bench.glue import record_grid
    from egkd.reports.glue import protocol

    def grid(**kw):
        return Grid(out=tmp_path, tasks=["rte"], methods=["kd"], students=["layers:1,3,5"], seeds={"rte": 1}, **kw)

    record_grid(grid())
    assert "--learning-rate" not in protocol([tmp_path], {})
    record_grid(grid(learning_rate=2e-4))
    text = protocol([tmp_path], {})
    assert "lr (1e-4 for transformer students, 1e-3 for BiLSTM/CNN; 0.0002 for every student of the grids run with " \
           "`--learning-rate 0.0002`)" in text
    assert "--seeds rte=1 --learning-rate 0.0002 --out" in text  # and the grid's own line says which


def test_protocol_states_each_wide_tuning_grid_only_where_one_ran(tmp_path):
    from egkd.bench.glue import record_grid
    from egkd.reports.glue import protocol

    def grid(out, **kw):
        return Grid(out=out, tasks=["stsb"], methods=["kd"], students=["layers:1"], seeds={"stsb": 1}, tune=True, **kw)

    record_grid(grid(tmp_path / "plain"))
    record_grid(grid(tmp_path / "lr", tune_lr=True))
    text = protocol([tmp_path / "plain"], {})
    assert "--tune-lr" not in text and "--tune-alpha" not in text and "alpha=1.0); the best dev score" in text
    assert "each method tried the same number of settings, its own three (kd: temperature=1.0," in text
    text = protocol([tmp_path / "plain", tmp_path / "lr"], {})
    assert "- With `--tune-lr` (the grids below that say so) each method tried nine settings: its three crossed " \
           "with 0.5x, 1x, 2x the student's learning rate" in text and "With `--tune-alpha`" not in text
    assert "--seeds stsb=1 --tune --tune-lr --out" in text
    assert "alpha=1.0); the grids run with `--tune-alpha` or `--tune-lr` crossed them with three of a second knob " \
           "(below); the best dev score" in text


def test_teachers_flag_uses_a_finished_teacher_as_it_is(grid_out, tmp_path, capsys):
    """`--teachers task=DIR`: a second grid (e.g. another learning rate) shares the first grid's teacher."""
    first, args = grid_out
    teacher = first / "teachers" / "rte"
    stamp = (teacher / "model.safetensors").stat().st_mtime_ns

    def into(out):  # the first grid's flags, one method and one seed, into another folder
        base = [a if a != first else out for a in args]
        base[base.index("--methods") + 1], base[base.index("--seeds") + 1] = "kd", "1"
        return base

    out = tmp_path / "other"
    assert cli_main(*into(out), "--teachers", f"rte={teacher}") == 0
    recs = read_results(out)
    assert list(recs) == ["rte/teacher", "rte/layers-1/kd/seed42"]
    assert recs["rte/teacher"]["predictions"] == read_results(first)["rte/teacher"]["predictions"]
    assert not (out / "teachers").exists() and (teacher / "model.safetensors").stat().st_mtime_ns == stamp
    # a folder that is not a finished run is refused in one line, and nothing learns from it
    capsys.readouterr()
    assert cli_main(*into(tmp_path / "third"), "--teachers", f"rte={tmp_path}") == 1
    said = " ".join("".join(capsys.readouterr()).split())
    assert f"--teachers gives {tmp_path} for rte, but it is not a finished run" in said
    assert not read_results(tmp_path / "third")


def test_a_unit_is_scored_once_and_a_finished_unscored_run_is_scored_without_training(grid_out, tmp_path,
                                                                                      monkeypatch):
    """A unit was evaluated twice (at the end of its training, then again for its explanations): once now."""
    from egkd import api

    first, args = grid_out
    out = tmp_path / "once"
    flags = [a if a != first else out for a in args]
    flags[flags.index("--methods") + 1], flags[flags.index("--seeds") + 1] = "kd", "1"
    flags += ["--teachers", f"rte={first / 'teachers' / 'rte'}"]
    calls = []
    real = api.evaluate

    def counted(*a, **kw):
        calls.append(kw)
        return real(*a, **kw)

    monkeypatch.setattr(api, "evaluate", counted)
    assert cli_main(*flags) == 0
    assert len(calls) == 1 and calls[0]["explanations"] and calls[0]["teacher_faithfulness"] is False
    rec = read_results(out)["rte/layers-1/kd/seed42"]
    assert -1 <= rec["consistency"] <= 1 and rec["comprehensiveness"] is not None
    # cut off after training, before scoring: the finished run is scored, not trained again
    run = out / rec["run"]
    metrics = json.loads((run / "metrics.json").read_text())
    del metrics["explanations"]
    (run / "metrics.json").write_text(json.dumps(metrics))
    (out / "results.jsonl").write_text("".join(to_line(r) + "\n" for k, r in read_results(out).items()
                                               if k != rec["key"]))
    stamp = (run / "model.safetensors").stat().st_mtime_ns
    calls.clear()
    assert cli_main(*flags) == 0
    assert len(calls) == 1 and (run / "model.safetensors").stat().st_mtime_ns == stamp
    again = read_results(out)["rte/layers-1/kd/seed42"]
    assert again["consistency"] == rec["consistency"] and again["predictions"] == rec["predictions"]


def test_a_record_line_drops_a_whole_split_idx_and_float_noise_and_reads_back_whole(tmp_path):
    whole = {"key": "stsb/a", "idx": [0, 1, 2], "predictions": [0.123456789, 2.0, 4.9999999]}
    part = {"key": "rte/b", "idx": [3, 1], "predictions": [1, 0]}
    line = json.loads(to_line(whole))
    assert "idx" not in line and line["predictions"] == [0.12346, 2.0, 5.0]
    assert json.loads(to_line(part)) == part  # labels and a subset's idx are kept exactly
    append_record(tmp_path, whole)
    append_record(tmp_path, part)
    back = read_results(tmp_path)
    assert back["stsb/a"]["idx"] == [0, 1, 2] and back["stsb/a"]["predictions"] == [0.12346, 2.0, 5.0]
    assert back["rte/b"] == part
    assert whole["idx"] == [0, 1, 2] and whole["predictions"][0] == 0.123456789  # the caller's record untouched


def test_a_pass_starts_over_when_a_unit_it_skipped_has_finished_elsewhere(tmp_path, monkeypatch):
    """Two processes: the seeds of a method whose tuning try ran elsewhere run as soon as that try is recorded, in
    the grid's order, not after every later task's units (a --max-hours session ended with RTE's seeds undone
    while MRPC's tuning ran)."""
    from contextlib import contextmanager

    from egkd.bench import glue

    grid = Grid(out=tmp_path, tasks=["rte", "mrpc"], methods=["kd"], students=["layers:1"],
                seeds={"rte": 2, "mrpc": 1}, tune=True)
    held = Unit("rte", "layers:1", "kd", 42, setting=0)
    seed, later = Unit("rte", "layers:1", "kd", 43), Unit("mrpc", "layers:1", "kd", 42, setting=0)
    assert held.key in prerequisites(grid, seed)
    recorded: dict[str, dict] = {}
    ran: list[str] = []

    @contextmanager
    def lock(out, unit):
        if unit == held:  # the other process holds it, and records it while this one goes on
            recorded[held.key] = {"key": held.key}
        yield unit != held

    monkeypatch.setattr(glue, "unit_lock", lock)
    monkeypatch.setattr(glue, "read_results", lambda out: dict(recorded))
    monkeypatch.setattr(glue, "unfinished", lambda grid, done, unit: unit.key not in done)
    monkeypatch.setattr(glue, "settle", lambda grid, done, unit: ran.append(unit.key) or {"key": unit.key})
    monkeypatch.setattr(glue, "append_record", lambda out, rec: recorded.update({rec["key"]: rec}))
    monkeypatch.setattr(glue, "drop_checkpoint", lambda grid, unit: None)
    assert glue.run_pass(grid, [held, seed, later], None, True, []) == ({held.key}, False)
    assert ran == []  # it stopped before the later task's unit, for a new pass that starts with the seed
    # --no-wait: one pass only; it goes on, and the seed no longer waits for the try that has finished
    assert glue.run_pass(grid, [held, seed, later], None, True, [], start_over=False) == ({held.key}, False)
    assert ran == [seed.key, later.key]


def test_rescore_fills_missing_faithfulness_without_training_and_keeps_the_rest(grid_out, tmp_path, capsys):
    """A record written before faithfulness was measured for its student gets it from --rescore: the same numbers
    the end-of-training scoring gives (same model, same rows), the rest of the record and every other line kept."""
    import shutil

    first, args = grid_out
    out = tmp_path / "copy"
    shutil.copytree(first, out)
    key = "rte/layers-1/egkd-gradient/seed43"
    before = read_results(out)[key]
    assert before["comprehensiveness"] is not None
    run = out / before["run"]
    metrics = json.loads((run / "metrics.json").read_text())
    del metrics["explanations"]["faithfulness"]
    (run / "metrics.json").write_text(json.dumps(metrics))
    lines = (out / "results.jsonl").read_text().splitlines()
    old = [to_line({**from_line(x), "comprehensiveness": None, "sufficiency": None}) if key in x else x
           for x in lines]
    (out / "results.jsonl").write_text("".join(x + "\n" for x in old))
    stamp = (run / "model.safetensors").stat().st_mtime_ns
    flags = [a if a != first else out for a in args]
    assert cli_main(*flags, "--rescore") == 0
    assert "1 finished unit(s) without faithfulness" in " ".join("".join(capsys.readouterr()).split())
    after = read_results(out)[key]
    assert after["comprehensiveness"] == pytest.approx(before["comprehensiveness"], abs=1e-9)
    assert after["sufficiency"] == pytest.approx(before["sufficiency"], abs=1e-9)
    assert after["consistency"] == pytest.approx(before["consistency"], abs=1e-9) and "rescored" in after
    assert after["comprehensiveness_random"] == pytest.approx(before["comprehensiveness_random"], abs=1e-9)
    for field in ("predictions", "score", "speedup", "finished", "seconds_per_epoch", "options"):
        assert after[field] == before[field], field
    new_lines = (out / "results.jsonl").read_text().splitlines()
    assert [x for x in new_lines if key not in x] == [x for x in lines if key not in x]
    assert (run / "model.safetensors").stat().st_mtime_ns == stamp
    assert "faithfulness" in json.loads((run / "metrics.json").read_text())["explanations"]
    # a record whose run folder is not on this machine (runs/ is not committed) is reported and left as it is
    other = "rte/layers-1/kd/seed43"
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text("".join(
        to_line({**from_line(x), "comprehensiveness": None}) + "\n" if other in x else x + "\n" for x in lines))
    shutil.rmtree(out / read_results(out)[other]["run"])
    assert cli_main(*flags, "--rescore") == 0
    shown = " ".join("".join(capsys.readouterr()).split())
    assert "1 finished unit(s) without faithfulness" in shown and "1 of them have no finished run folder" in shown
    assert read_results(out)[other]["comprehensiveness"] is None and read_results(out)[key] == after
    # a unit scored with faithfulness but before the random-order baseline existed gets the baseline alone
    third = "rte/layers-1/egkd-gradient/seed42"
    full = read_results(out)[third]
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text("".join(
        to_line({**from_line(x), "comprehensiveness_random": None, "sufficiency_random": None}) + "\n"
        if third in x else x + "\n" for x in lines))
    assert cli_main(*flags, "--rescore") == 0
    assert "2 finished unit(s) without faithfulness" in " ".join("".join(capsys.readouterr()).split())
    filled = read_results(out)[third]
    for field in ("comprehensiveness", "sufficiency", "comprehensiveness_random", "sufficiency_random"):
        assert filled[field] == pytest.approx(full[field], abs=1e-9), field


def test_rescore_with_ig_adds_ig_columns_beside_the_gxi_ones(grid_out, tmp_path, capsys):
    """--rescore --rescore-explainer ig: every finished student gains consistency_ig and IG faithfulness, equal to
    what `evaluate --explainer ig` measures on the same rows; the gxi columns, metrics.json's gxi metrics and the
    training record stay as they were; a second pass finds nothing left to do."""
    import shutil

    from egkd import api

    first, args = grid_out
    out = tmp_path / "copy"
    shutil.copytree(first, out)
    flags = [a if a != first else out for a in args]
    before = read_results(out)
    assert cli_main(*flags, "--rescore", "--rescore-explainer", "ig") == 0
    assert "4 finished unit(s) without ig columns" in " ".join("".join(capsys.readouterr()).split())
    after = read_results(out)
    key = "rte/layers-1/egkd-gradient/seed43"
    run = out / after[key]["run"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert "IntegratedGradients" in metrics["explanations_ig"]["explainer"]
    assert "IntegratedGradients" not in str(metrics["explanations"]["explainer"])
    check = tmp_path / "check"
    shutil.copytree(run, check)
    fresh = api.evaluate(check, teacher=str(out / "teachers" / "rte"), explanations=True, explainer="ig",
                         max_explain_examples=16, teacher_faithfulness=False, show=False, max_examples=40)
    assert after[key]["consistency_ig"] == pytest.approx(fresh["explanations_ig"]["consistency"]["spearman"], abs=1e-9)
    faith = fresh["explanations_ig"]["faithfulness"]["student"]
    assert after[key]["comprehensiveness_ig"] == pytest.approx(faith["comprehensiveness"], abs=1e-9)
    assert after[key]["comprehensiveness_random_ig"] == pytest.approx(faith["random_order"]["comprehensiveness"],
                                                                       abs=1e-9)
    for k, rec in after.items():
        if rec["kind"] != "student":
            continue
        assert -1.0 <= rec["consistency_ig"] <= 1.0, k
        for field in ("consistency", "comprehensiveness", "comprehensiveness_random", "predictions", "score"):
            assert rec[field] == before[k][field], (k, field)
    assert cli_main(*flags, "--rescore", "--rescore-explainer", "ig") == 0
    assert "0 finished unit(s) without ig columns" in " ".join("".join(capsys.readouterr()).split())
    # the results page sets the IG consistency beside gxi's, mean over the seeds scored with both
    assert cli_main("report", out, "--out", tmp_path / "page.md", "--resamples", "50") == 0
    section = (tmp_path / "page.md").read_text().split("## Consistency with integrated gradients")[1].split("##")[0]
    recs = [after[f"rte/layers-1/egkd-gradient/seed{s}"] for s in (42, 43)]
    gxi, ig = (sum(r[f] for r in recs) / 2 for f in ("consistency", "consistency_ig"))
    gain = sum(r["comprehensiveness_ig"] - r["comprehensiveness_random_ig"] for r in recs) / 2
    assert f"| rte | layers:1 | egkd-gradient | 2 | {gxi:.2f} | {ig:.2f} | {gain:+.3f} |" in section
    target = next(line for line in (tmp_path / "page.md").read_text().splitlines()
                  if line.startswith("- **layers:1 egkd-gradient: consistency >= 0.6"))
    assert target.endswith(f"; with integrated-gradient maps rte {ig:.2f}.")  # beside the gxi numbers it is judged on
    assert cli_main(*flags, "--rescore", "--rescore-explainer", "occlusion") == 2


def test_rescore_skips_a_unit_another_process_scored_since_it_started(grid_out, monkeypatch):
    """Two --rescore processes on one grid: the list of units is read at the start, so a unit is checked again once
    its lock is held; one the other process has scored meanwhile is not scored twice."""
    from egkd import api
    from egkd.bench import glue

    out, _ = grid_out
    grid = Grid(out=out, tasks=["rte"], methods=["kd"], students=["layers:1"], seeds={"rte": 1})
    key = "rte/layers-1/kd/seed42"
    scored = read_results(out)
    unscored = {**scored, key: {**scored[key], "consistency_ig": None}}
    reads = iter([unscored, scored])  # at the start: still to do; under the lock: done by the other process
    monkeypatch.setattr(glue, "read_results", lambda folder: next(reads))
    monkeypatch.setattr(api, "rescore_explanations", lambda *a, **k: pytest.fail("scored a second time"))
    scored[key] = {**scored[key], "consistency_ig": 0.5, "comprehensiveness_ig": 0.1}
    assert glue.rescore_grid(grid, explainer="ig") == 0


def test_erasure_baseline_script_scores_the_grids_own_map_and_a_random_order(grid_out, monkeypatch, capsys):
    """scripts/erasure_baseline.py: its gradient x input AOPC is the one the grid recorded for the unit (same
    scoring, same rows), beside a random order of the same tokens."""
    import importlib.util
    import sys
    from pathlib import Path

    out, _ = grid_out
    path = Path(__file__).resolve().parents[2] / "scripts" / "erasure_baseline.py"
    spec = importlib.util.spec_from_file_location("erasure_baseline", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(sys, "argv", ["erasure_baseline.py", str(out), "--tasks", "rte", "--students", "layers:1",
                                      "--methods", "kd", "--seeds", "42,43", "--examples", "16"])
    script.main()
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| rte |")]
    assert len(row) == 1
    cells = [c.strip() for c in row[0].strip("|").split("|")]
    assert cells[:4] == ["rte", "layers:1", "kd", "2"]
    recs = read_results(out)
    recorded = [recs[f"rte/layers-1/kd/seed{s}"] for s in (42, 43)]
    assert float(cells[4]) == pytest.approx(sum(r["comprehensiveness"] for r in recorded) / 2, abs=5e-4)
    assert float(cells[7]) == pytest.approx(sum(r["sufficiency"] for r in recorded) / 2, abs=5e-4)
    assert float(cells[6]) == pytest.approx(float(cells[4]) - float(cells[5]), abs=2e-3)
    # another explainer's map is erased the same way; the random order, which ignores the map, stays as it was
    monkeypatch.setattr(sys, "argv", [*sys.argv, "--explainer", "occlusion"])
    script.main()
    lines = capsys.readouterr().out.splitlines()
    assert "comprehensiveness: occlusion | random | occlusion - random" in lines[0]
    other = [c.strip() for c in next(x for x in lines if x.startswith("| rte |")).strip("|").split("|")]
    assert other[5] == cells[5] and other[8] == cells[8]


def test_a_student_trained_on_ig_maps_is_recorded_with_ig_columns(glue_dir, minilm_path, tmp_path, capsys):
    """egkd-gradient-ig's units are scored with IG maps as they finish (beside the gxi scoring every method gets),
    with the numbers `evaluate --explainer ig` measures, so no --rescore pass is left for them."""
    import shutil

    from egkd import api

    out = tmp_path / "results"
    args = ["bench", "glue", "--tasks", "rte", "--methods", "kd,egkd-gradient-ig", "--students", "layers:1",
            "--seeds", "1", "--teacher-model", TINY_TEACHER_MODEL, "--max-train-examples", "32",
            "--max-eval-examples", "24", "--max-seq-length", "32", "--epochs", "1", "--explain-examples", "8",
            "--data-dir", glue_dir, "--out", out]
    assert cli_main(*args) == 0
    recs = read_results(out)
    ig, kd = recs["rte/layers-1/egkd-gradient-ig/seed42"], recs["rte/layers-1/kd/seed42"]
    assert "consistency_ig" not in kd  # the other methods keep the shared gxi scoring only
    metrics = json.loads((out / ig["run"] / "metrics.json").read_text())
    assert ig["consistency"] == metrics["explanations"]["consistency"]["spearman"]  # gxi, as for every method
    check = tmp_path / "check"
    shutil.copytree(out / ig["run"], check)
    fresh = api.evaluate(check, teacher=str(out / "teachers" / "rte"), explanations=True, explainer="ig",
                         max_explain_examples=8, teacher_faithfulness=False, show=False, max_examples=24)
    assert ig["consistency_ig"] == pytest.approx(fresh["explanations_ig"]["consistency"]["spearman"], abs=1e-9)
    assert ig["comprehensiveness_ig"] == pytest.approx(
        fresh["explanations_ig"]["faithfulness"]["student"]["comprehensiveness"], abs=1e-9)
    capsys.readouterr()
    assert cli_main(*args, "--rescore", "--rescore-explainer", "ig") == 0
    assert "1 finished unit(s) without ig columns" in " ".join("".join(capsys.readouterr()).split())  # KD's only
