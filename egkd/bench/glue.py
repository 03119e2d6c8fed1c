"""``egkd bench glue``: the resumable GLUE comparison grid.

Every (task, student, method, seed) is one *unit*, trained into its own run folder under ``OUT/runs`` and, once
finished and evaluated, appended as one JSON line to ``OUT/results.jsonl`` (with its per-example dev predictions,
so that :mod:`egkd.reports.glue` can bootstrap any comparison later). A unit whose key is in ``results.jsonl``
is never run again (so its resume checkpoint is deleted); a unit that was interrupted resumes from its last
checkpoint. So the grid can be run by several sessions in turn (``--max-hours`` stops starting new units after a
time budget), and by hand as far as the machine allows. Several processes may share one results folder at once:
each unit is run under a lock (:mod:`egkd.locks`), and a process skips the units another one holds and the
units that wait for them.

Order: cheap tasks first (RTE, MRPC, STS-B, CoLA, SST-2); inside a task the teacher, then the tuning units
(``--tune``), then seed by seed every student and method, so that one seed of every method is finished before
the next seed starts and a partial grid still compares all methods.

What each task, method and student is trained with, and the tuning protocol, are in :mod:`egkd.bench.protocol`.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import statistics
import time
import traceback
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from egkd.bench.protocol import (
    METHOD_OPTIONS,
    TASK_PLAN,
    TEACHER_MODEL,
    pairs_with,
    student_options,
    tuning_grid,
)
from egkd.bench.records import (
    append_record,
    explanation_fields,
    explanations_key,
    field_suffix,
    make_record,
    read_results,
    replace_records,
    results_lock,
)
from egkd.config import RunConfig
from egkd.errors import EgkdError
from egkd.explain.student import student_map_options
from egkd.locks import exclusive
from egkd.reports.console import console
from egkd.reports.tables import to_markdown
from egkd.training.checkpoint import can_resume, checkpoint_dir

STUDENT_KINDS = ("layers", "depth", "config", "bilstm", "cnn")
FIRST_SEED = 42
EXPLAIN_EXAMPLES = 200  # consistency and faithfulness on the first 200 dev examples of every unit
CONFIG_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunConfig)}
IGNORED_OPTIONS = ("data_dir", "teacher", "log_with")  # where things are, not how they were trained


def split_students(text: str) -> list[str]:
    """``layers:1,3,5,layers:2,5,bilstm`` -> ``['layers:1,3,5', 'layers:2,5', 'bilstm']``.

    Student specs contain commas themselves, so a comma starts a new student only before a known kind (or a
    path); ``;`` always separates.
    """
    out: list[str] = []
    for chunk in text.split(";"):
        for part in chunk.split(","):
            part = part.strip()
            if not part:
                continue
            new = re.match(rf"^({'|'.join(STUDENT_KINDS)})(:|$)", part) or "/" in part
            if new or not out:
                out.append(part)
            else:
                out[-1] += "," + part
    return out


def slug(student: str) -> str:
    """A folder name for a student spec: ``layers:1,3,5`` -> ``layers-1-3-5``."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", student).strip("-")



@dataclass(frozen=True)
class Unit:
    """One run of the grid. ``student`` is None for the teacher; ``setting`` indexes its tuning_grid()."""

    task: str
    student: str | None
    method: str
    seed: int
    setting: int | None = None

    @property
    def kind(self) -> str:
        return "teacher" if self.student is None else ("tune" if self.setting is not None else "student")

    @property
    def key(self) -> str:
        if self.student is None:
            return f"{self.task}/teacher"
        tail = f"/tune{self.setting}" if self.setting is not None else ""
        return f"{self.task}/{slug(self.student)}/{self.method}/seed{self.seed}{tail}"

    def run_dir(self, root: Path) -> Path:
        return root / "teachers" / self.task if self.student is None else root / "runs" / self.key


def teacher_unit(task: str) -> Unit:
    """The one teacher of ``task`` that every method and student of every grid shares (Part 2 of the issue)."""
    return Unit(task, None, "ft", FIRST_SEED)


# what defines a grid (kept in grids.json); data_dir and teachers only say where things are
GRID_FIELDS = ("tasks", "methods", "students", "seeds", "tune", "max_train_examples", "epochs", "max_seq_length",
               "max_eval_examples", "explain_examples", "teacher_model", "learning_rate", "tune_alpha",
               "tune_lr")


@dataclass
class Grid:
    """What to run and where; :meth:`units` lists it in run order."""

    out: Path
    tasks: list[str]
    methods: list[str]
    students: list[str]
    seeds: dict[str, int]  # task -> number of seeds
    tune: bool = False
    data_dir: str | None = None
    teachers: dict[str, str] = field(default_factory=dict)  # task -> existing teacher run folder
    explain_examples: int = EXPLAIN_EXAMPLES
    max_train_examples: int | None = None  # cap for every task (quick trials)
    epochs: float | None = None  # override every run's epochs (quick trials)
    max_seq_length: int | None = None  # override the task's length (quick trials)
    max_eval_examples: int | None = None  # first N dev examples only (quick trials; tests)
    teacher_model: str = TEACHER_MODEL
    learning_rate: float | None = None  # every student's (the teacher's stays 5e-5); ft's tuning tries set their own
    tune_alpha: bool = False  # --tune-alpha: nine tuning tries per method (its own three x KD's alpha)
    tune_lr: bool = False  # --tune-lr: nine tuning tries per method (its own three x the learning rate)

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in TASK_PLAN]
        if unknown:
            raise EgkdError(f"unknown task(s) {', '.join(unknown)} for the GLUE grid; "
                            f"choose from {', '.join(TASK_PLAN)}")
        bad = [m for m in self.methods if m not in METHOD_OPTIONS]
        if bad:
            raise EgkdError(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(METHOD_OPTIONS)}")
        if not self.students:
            raise EgkdError("--students is empty: give at least one, e.g. layers:1,3,5")
        for flag, on in (("--tune-alpha", self.tune_alpha), ("--tune-lr", self.tune_lr)):
            if on and not self.tune:
                raise EgkdError(f"{flag} widens --tune's tries: add --tune")
        if self.tune_alpha and self.tune_lr:
            raise EgkdError("--tune-alpha and --tune-lr each give nine tries: choose one (one grid per --out)")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise EgkdError(f"--learning-rate must be positive, got {self.learning_rate:g}")
        if self.tune_lr and self.learning_rate is not None:
            raise EgkdError("--tune-lr tries 0.5, 1 and 2x each student's default learning rate itself: drop "
                            "--learning-rate, or use --tune-alpha or --tune with it")
        self.tasks = [t for t in TASK_PLAN if t in self.tasks]  # cheapest first, whatever order was given

    def units(self) -> Iterator[Unit]:
        """Run order; tuning units come before the seeds they decide."""
        for task in self.tasks:
            yield teacher_unit(task)
            pairs = [(s, m) for s in self.students for m in self.methods if pairs_with(s, m)]
            if self.tune:
                for student, method in pairs:
                    for i in range(len(self.tries(task, method, student))):
                        yield Unit(task, student, method, FIRST_SEED, setting=i)
            for s in range(self.seeds.get(task, 1)):
                for student, method in pairs:
                    yield Unit(task, student, method, FIRST_SEED + s)

    def unpaired(self) -> str:
        """One line naming the (student, method) pairs the grid leaves out, or '' when it runs every pair."""
        left_out = [f"{m} with {s}" for s in self.students for m in self.methods if not pairs_with(s, m)]
        return (f"not run: {', '.join(left_out)} (PKD and AD-KD feed the student's inputs to the teacher, which needs "
                "the teacher's tokenizer)") if left_out else ""

    def options(self, unit: Unit, setting: dict[str, Any] | None = None) -> dict[str, Any]:
        """The RunConfig options of ``unit`` (for students: ``setting`` is the tuned one, or the tuning try)."""
        plan = TASK_PLAN[unit.task]
        opts: dict[str, Any] = {"task": unit.task, "data_dir": self.data_dir, "seed": unit.seed,
                                "max_seq_length": self.max_seq_length or plan["max_seq_length"], "batch_size": 32,
                                "log_with": "csv", "max_eval_examples": self.max_eval_examples,
                                "max_train_examples": self.max_train_examples or plan.get("max_train_examples")}
        if unit.student is None:
            opts.update(model=self.teacher_model, epochs=self.epochs or plan["teacher_epochs"], learning_rate=5e-5)
            return opts
        opts.update(teacher=self.teacher_dir(unit.task), student=unit.student,
                    epochs=self.epochs or plan["student_epochs"], alpha=0.9, temperature=2.0,
                    **student_options(unit.student, unit.method), **METHOD_OPTIONS[unit.method])
        if self.learning_rate is not None:
            opts["learning_rate"] = self.learning_rate
        if unit.setting is not None:
            setting = self.tries(unit.task, unit.method, unit.student)[unit.setting]
        opts.update(setting or {})
        return opts

    def tries(self, task: str, method: str, student: str) -> list[dict[str, Any]]:
        """The tuning settings of ``method`` for ``student`` on ``task`` (with ``--tune-alpha`` or ``--tune-lr``,
        nine)."""
        return tuning_grid(task, method, student, second=self.second_axis)

    @property
    def second_axis(self) -> str | None:
        """What ``--tune``'s tries are crossed with: ``alpha`` (``--tune-alpha``), ``lr`` (``--tune-lr``) or None."""
        return "alpha" if self.tune_alpha else "lr" if self.tune_lr else None

    def tuning_flags(self) -> str:
        """The command-line flags that decide the tuning tries ('' without --tune)."""
        return ((" --tune" if self.tune else "") + (" --tune-alpha" if self.tune_alpha else "")
                + (" --tune-lr" if self.tune_lr else ""))

    def teacher_dir(self, task: str) -> str:
        return self.teachers.get(task) or str(teacher_unit(task).run_dir(self.out))

    def describe(self) -> dict[str, Any]:
        """The grid's defining flags (what ``grids.json`` keeps and the results page quotes)."""
        return {k: getattr(self, k) for k in GRID_FIELDS}

    @classmethod
    def from_description(cls, out: Path, d: dict[str, Any]) -> Grid:
        return cls(out=out, **{k: v for k, v in d.items() if k in GRID_FIELDS})

    def command(self) -> str:
        """The ``egkd bench glue`` command line that (re)runs this grid."""
        seeds = ",".join(f"{t}={n}" for t, n in self.seeds.items())
        extra = {"--learning-rate": self.learning_rate,
                 "--max-train-examples": self.max_train_examples, "--epochs": self.epochs,
                 "--max-seq-length": self.max_seq_length, "--max-eval-examples": self.max_eval_examples}
        line = (f"egkd bench glue --tasks {','.join(self.tasks)} --methods {','.join(self.methods)} "
                f"--students '{';'.join(self.students)}' --seeds {seeds}" + self.tuning_flags())
        if self.teacher_model != TEACHER_MODEL:
            line += f" --teacher-model {self.teacher_model}"
        if self.explain_examples != EXPLAIN_EXAMPLES:
            line += f" --explain-examples {self.explain_examples}"
        line += "".join(f" {flag} {v}" for flag, v in extra.items() if v)
        return line + f" --out {self.out}"


# ------------------------------------------------------------------------------------------------ grids
def read_grids(out: Path) -> list[Grid]:
    """Every grid that was run into ``out`` (``grids.json``), oldest first."""
    path = out / "grids.json"
    if not path.is_file():
        return []
    return [Grid.from_description(out, d) for d in json.loads(path.read_text())]


def record_grid(grid: Grid) -> None:
    """Add ``grid`` to ``grids.json`` (once): several grids may share one results folder."""
    with results_lock(grid.out):  # two processes starting two grids at once must both be recorded
        known = [g.describe() for g in read_grids(grid.out)]
        if grid.describe() not in known:
            known.append(grid.describe())
            (grid.out / "grids.json").write_text(json.dumps(known, indent=2))


def check_tuning_agrees(grid: Grid) -> None:
    """Refuse a grid whose tuning tries would be other settings under the same unit keys than those of a grid
    already run into its folder (``--tune`` alone, with ``--tune-alpha`` or with ``--tune-lr``): each would take
    the other's tries for its own. Where the tries are the same (KD on STS-B and ft under both wide flags) the
    grids may share the folder, and their units."""
    if not grid.tune:
        return
    ours = {(t, s, m) for t in grid.tasks for s in grid.students for m in grid.methods}
    for other in (g for g in read_grids(grid.out) if g.tune):
        shared = ours & {(t, s, m) for t in other.tasks for s in other.students for m in other.methods}
        clash = sorted((t, s, m) for t, s, m in shared if other.tries(t, m, s) != grid.tries(t, m, s))
        if clash:
            task, student, method = clash[0]
            raise EgkdError(f"{grid.out} holds a grid run with {other.tuning_flags().strip()}, whose tries for "
                            f"({task}, {student}, {method}) differ from this one's ({grid.tuning_flags().strip()}): "
                            "give this grid its own --out (--teachers can share the teachers)")


def unit_lock(out: Path, unit: Unit) -> AbstractContextManager[bool]:
    """Held by the process that runs ``unit``: a second process sharing ``out`` skips the unit instead of
    training it too (yields False there)."""
    return exclusive(out / ".locks" / (unit.key.replace("/", "__") + ".lock"), wait=False)


def running_elsewhere(out: Path, unit: Unit) -> bool:
    """Whether another process holds ``unit`` now (for ``--dry-run``)."""
    with unit_lock(out, unit) as mine:
        return not mine


def chosen_settings(grid: Grid, done: dict[str, dict[str, Any]], unit: Unit) -> dict[str, Any] | None:
    """The tuned setting for a seed unit: the best-scoring finished tuning try (None without --tune).

    Raises when tuning is on but not finished for this (task, student, method): the seeds wait for it.
    """
    if not grid.tune:
        return None
    tries = [done.get(t.key) for t in tuning_tries(grid, unit)]
    if any(t is None for t in tries):
        raise EgkdError(f"tuning of {unit.key} is not finished")
    return grid.tries(unit.task, unit.method, unit.student)[best_try(tries)["setting"]]  # type: ignore[arg-type]


def tuning_tries(grid: Grid, unit: Unit) -> list[Unit]:
    """The first-seed tuning units whose best score decides ``unit``'s setting, in grid order."""
    return [Unit(unit.task, unit.student, unit.method, FIRST_SEED, setting=i)
            for i in range(len(grid.tries(unit.task, unit.method, unit.student)))]


def best_try(tries: list[dict[str, Any]]) -> dict[str, Any]:
    """The tuning try whose setting the seeds take: the best dev score, the first try (in grid order) on a tie."""
    return max(tries, key=lambda t: t["score"])


# ------------------------------------------------------------------------------------------------- running
def run_unit(grid: Grid, unit: Unit, options: dict[str, Any]) -> dict[str, Any]:
    """Train (or resume) the unit's run, evaluate it with explanation metrics, return its record."""
    from egkd import api

    run = Path(grid.teacher_dir(unit.task)) if unit.student is None else unit.run_dir(grid.out)
    finished = is_finished(run)
    external = unit.student is None and unit.task in grid.teachers
    # a student is scored once, by the evaluation that ends its training, explanations included; the teacher's
    # own faithfulness is left out (the same for every unit of a task, and half the scoring time)
    scoring = {"explanations": True, "max_explain_examples": grid.explain_examples, "teacher_faithfulness": False}
    if external:  # used as it is: it was not trained with this grid's settings, so they are not checked
        if not finished:
            raise EgkdError(f"--teachers gives {run} for {unit.task}, but it is not a finished run (no metrics.json "
                            "or model.safetensors): give the folder `egkd finetune --out` wrote")
    elif finished:
        check_finished_run(run, options)
    else:
        resume = can_resume(run)
        opts = {**options, "out": str(run), "resume": resume, "overwrite": run.is_dir() and not resume}
        if unit.student is None:
            api.finetune(**opts)
        else:
            api.distill(**opts, evaluate_options=scoring)
    metrics = json.loads((run / "metrics.json").read_text())
    if unit.student is not None and "explanations" not in metrics:  # finished but never scored (cut off between)
        metrics = api.evaluate(run, show=False, max_examples=grid.max_eval_examples, **scoring)
    if unit.student is not None and trained_on_ig(options) and explanations_key("ig") not in metrics:
        # a student trained to match integrated-gradient maps is judged on them too (consistency_ig, ...), so its
        # record needs no --rescore pass; gxi stays the scoring every method shares
        metrics = api.rescore_explanations(run, grid.teacher_dir(unit.task), explainer="ig",
                                           max_explain_examples=grid.explain_examples, teacher_faithfulness=False,
                                           max_examples=grid.max_eval_examples, show=False)
    return make_record(unit, run, grid.out, options, metrics)


def trained_on_ig(options: dict[str, Any]) -> bool:
    """Whether the unit's student learns the teacher's integrated-gradient maps (``egkd-gradient-ig``): any
    student map but gxi, read by the parser training uses (``ig``, ``integrated_gradients``, their options)."""
    return student_map_options(options.get("student_explainer") or "gxi") != (1, "zero")  # (1, zero): gxi


def is_finished(run: Path) -> bool:
    return (run / "metrics.json").is_file() and (run / "model.safetensors").is_file()


def teacher_gone(grid: Grid, done: dict[str, dict[str, Any]], unit: Unit) -> bool:
    """A recorded teacher whose folder is missing: teachers (90 MB each) are not committed, so a session on a
    fresh machine that goes on with a grid must train them again before their students can run."""
    return (unit.student is None and unit.key in done and unit.task not in grid.teachers
            and not is_finished(unit.run_dir(grid.out)))


def unfinished(grid: Grid, done: dict[str, dict[str, Any]], unit: Unit) -> bool:
    """Whether ``unit`` is left to run: not recorded, or a recorded teacher whose folder is gone."""
    return unit.key not in done or teacher_gone(grid, done, unit)


def finished_since(grid: Grid, units: list[Unit], busy: set[str]) -> set[str]:
    """The units in ``busy`` (skipped: another process held them) that are finished now. Being recorded is not
    enough: a teacher trained again because its folder was gone is recorded all along (a second process that
    took the record for "finished" started over at once, again and again, while the first one trained it)."""
    done = read_results(grid.out)
    return {u.key for u in units if u.key in busy and not unfinished(grid, done, u)}


def check_rebuilt_teacher(grid: Grid, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Students of one task must all learn from one teacher: a rebuilt teacher is used only if it reproduces the
    recorded one's dev predictions (same seed and settings on a CPU); else it is set aside (``stale/``) so that
    no later process distills from it. Labels must match exactly; a regression score may move by float32 noise
    (STS-B rebuilt on this repo's CPUs: at most 2e-4 on the 0-5 scale, Pearson within 1e-5), so by 1e-3."""
    same = new["idx"] == old["idx"] and all(abs(a - b) <= 1e-3 for a, b in zip(new["predictions"], old["predictions"],
                                                                                 strict=True))
    if same:
        return
    run = grid.out / new["run"]
    aside = grid.out / "stale" / f"{new['key']}-rebuilt-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
    aside.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(run, aside)
    raise EgkdError(f"{new['key']} was trained again (its folder was missing) but its dev predictions differ from the "
                    f"recorded teacher's ({new['score']:.2f} vs {old['score']:.2f}; set aside in {aside}): pass the "
                    "original teacher with --teachers, or start a new --out")


def check_finished_run(run: Path, options: dict[str, Any]) -> None:
    """A finished run is reused only if it was trained with the unit's settings (the grid may have changed)."""
    from egkd.api import read_run_config

    cfg = read_run_config(run)
    if cfg is None:
        return
    differ = [k for k, v in options.items() if k not in IGNORED_OPTIONS and hasattr(cfg, k) and getattr(cfg, k) != v]
    if differ:
        raise EgkdError(f"{run} was trained with other settings ({', '.join(differ)}); delete it to rerun the unit")


def recorded(options: dict[str, Any], name: str) -> Any:
    """A record's value of an option; records written before the option existed ran with its default."""
    if name in options:
        return options[name]
    default = CONFIG_DEFAULTS.get(name)
    return None if default is dataclasses.MISSING else default


def drop_stale(grid: Grid, stale: list[tuple[str, list[str]]]) -> None:
    """Move stale records to ``stale.jsonl`` and their run folders to ``stale/``, so the grid reruns them."""
    keys = {k for k, _ in stale}
    path = grid.out / "results.jsonl"
    keep, moved, kept_runs = [], [], set()
    with results_lock(grid.out):  # another process may be appending its record right now
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                keep.append(line)
                continue
            if rec.get("key") in keys:
                moved.append(line)
                continue
            keep.append(line)
            if rec.get("run"):
                kept_runs.add(grid.out / rec["run"])
        with (grid.out / "stale.jsonl").open("a") as f:
            f.writelines(m + "\n" for m in moved)
        path.write_text("".join(k + "\n" for k in keep))
    # A seed's tuning tries live inside its folder (runs/<key>/tune<i>) but are units of their own, and the seed's
    # record may point at one of them: only folders no kept record points at go with the stale unit (a seed before
    # its stale tries, so that setting the seed aside does not delete a try just set aside inside it).
    for key in sorted(keys):
        run = grid.out / "runs" / key
        if run.is_dir():
            target = grid.out / "stale" / key
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            for entry in run.iterdir():
                if entry not in kept_runs:
                    shutil.move(str(entry), str(target / entry.name))
            if not any(run.iterdir()):
                run.rmdir()
    console.print(f"[yellow]{len(keys)} stale unit(s) moved to {grid.out / 'stale.jsonl'} and {grid.out / 'stale'}/;"
                  " rerunning them[/]")


def stale_units(grid: Grid, done: dict[str, dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """Finished units of this grid whose recorded settings differ from what the grid would run now."""
    stale = []
    for unit in grid.units():
        rec = done.get(unit.key)
        if rec is None or unit.student is None and unit.task in grid.teachers:
            continue
        try:
            setting = chosen_settings(grid, done, unit) if unit.kind == "student" else None
        except EgkdError:  # tuning unfinished: nothing to compare yet
            continue
        differ = differing(grid.options(unit, setting), rec["options"])
        if differ:
            stale.append((unit.key, differ))
    return stale


def differing(want: dict[str, Any], options: dict[str, Any]) -> list[str]:
    """The training settings in which a record's ``options`` differ from ``want`` (where things are: ignored)."""
    return [k for k, v in want.items() if k not in IGNORED_OPTIONS and recorded(options, k) != v]


def finished_twin(grid: Grid, done: dict[str, dict[str, Any]], unit: Unit,
                  options: dict[str, Any]) -> dict[str, Any] | None:
    """A finished unit that trained exactly what ``unit`` would: the tuning try at the default setting and the
    first seed run at that setting are the same run, so whichever finishes first stands for both (a third of
    the tuning budget saved, and the first seed free when the default wins)."""
    if unit.student is None or unit.seed != FIRST_SEED:
        return None
    settings = [None, *range(len(grid.tries(unit.task, unit.method, unit.student)))] if grid.tune else [None]
    for setting in settings:
        rec = done.get(Unit(unit.task, unit.student, unit.method, unit.seed, setting).key)
        if setting != unit.setting and rec is not None and not differing(options, rec["options"]):
            return rec
    return None


def prerequisites(grid: Grid, unit: Unit) -> list[str]:
    """The units that must finish before ``unit`` can run: its task's teacher and, for a seed of a tuned
    grid, the tuning tries that choose its setting."""
    if unit.student is None:
        return []
    needs = [teacher_unit(unit.task).key]
    if grid.tune and unit.kind == "student":
        needs += [t.key for t in tuning_tries(grid, unit)]
    return needs


def plan_table(grid: Grid, done: dict[str, dict[str, Any]]) -> str:
    """What ``--dry-run`` shows: each unit's state (a pending unit that a finished twin will stand for says so)."""
    rows, stale = [], dict(stale_units(grid, done))
    for u in grid.units():
        rec = done.get(u.key)
        state = "done" if rec else ("resumable" if can_resume(u.run_dir(grid.out)) else "pending")
        if teacher_gone(grid, done, u):
            state = "done, folder missing: trained again and checked against its record"
        if u.key in stale:
            state = f"stale ({', '.join(stale[u.key])}): --rerun-stale reruns it"
        elif not rec and running_elsewhere(grid.out, u):
            state = "running in another process"
        if state == "pending" and u.kind != "teacher":
            twin = pending_twin(grid, done, u)
            state = f"reuses {twin['key']}" if twin else state
        rows.append([u.key, u.kind, state, "-" if not rec else f"{rec['main_metric']} {rec['score']:.2f}"])
    return to_markdown(["unit", "kind", "state", "dev score"], rows)


def pending_twin(grid: Grid, done: dict[str, dict[str, Any]], unit: Unit) -> dict[str, Any] | None:
    """The finished twin that will stand for a pending student ``unit`` (None when it must train, or when it is a
    seed of an unfinished tuning, whose setting is not known yet)."""
    try:
        setting = chosen_settings(grid, done, unit) if unit.kind == "student" else None
    except EgkdError:
        return None
    return finished_twin(grid, done, unit, grid.options(unit, setting))


def estimate(grid: Grid, done: dict[str, dict[str, Any]]) -> str:
    """One line for ``--dry-run``: how much training the units left to run will take, from the recorded training
    time of finished units like them (medians): the same task, student and method; else the same task and method
    with another student; else the task's KD time times the method's cost over KD's on the other tasks. A plan for
    a machine that is shared or cut off at any moment (several sessions of a few hours) needs that number first."""
    like: dict[tuple[str, ...], list[float]] = {}
    for rec in done.values():
        if rec.get("train_seconds") and not rec.get("same_as"):  # a twin's record repeats another unit's time
            like.setdefault((rec["task"], str(rec["student"]), rec["method"]), []).append(rec["train_seconds"])
            if rec["student"] is not None:  # a teacher (method ft) is timed by teachers only, students by students
                like.setdefault((rec["task"], rec["method"]), []).append(rec["train_seconds"])
    median = {k: statistics.median(v) for k, v in like.items()}

    def over_kd(method: str) -> float | None:
        ratios = [median[(t, method)] / median[(t, "kd")] for t in TASK_PLAN if (t, method) in median
                  and (t, "kd") in median]
        return statistics.median(ratios) if ratios else None

    sources = ("timed by finished units of the same student and method", "by another student's",
               "by the method's cost over KD's on other tasks", "not estimated (nothing like them recorded yet)")
    seconds, how = 0.0, dict.fromkeys(sources, 0)
    for u in grid.units():
        if not unfinished(grid, done, u) or (u.kind != "teacher" and pending_twin(grid, done, u)):
            continue
        student = u.student is not None
        ratio = over_kd(u.method) if student and (u.task, "kd") in median else None
        for source, value in zip(sources, (median.get((u.task, str(u.student), u.method)),
                                           median.get((u.task, u.method)) if student else None,
                                           ratio and ratio * median[(u.task, "kd")], 0.0), strict=True):
            if value is not None:
                seconds += value
                how[source] += 1
                break
    n = sum(how.values())
    if not n:
        return "nothing left to train"
    if how[sources[-1]] == n:
        return f"{n} unit(s) to train: no estimate, nothing like them recorded yet"
    bound = "more than " if how[sources[-1]] else ""
    return (f"{n} unit(s) to train: {bound}{seconds / 3600:.1f} hours of training in one process at the "
            f"recorded speed ({', '.join(f'{k} {source}' for source, k in how.items() if k)}); scoring adds "
            "about a minute per unit, and a fresh machine first rebuilds the teachers and their caches")


def settle(grid: Grid, done: dict[str, dict[str, Any]], unit: Unit) -> dict[str, Any]:
    """The record of ``unit``: trained (or resumed) now, or the run of a finished twin with its settings."""
    setting = chosen_settings(grid, done, unit) if unit.kind == "student" else None
    options = grid.options(unit, setting)
    twin = finished_twin(grid, done, unit, options)
    if twin is None:
        return run_unit(grid, unit, options)
    console.print(f"same settings as the finished {twin['key']}: its run stands for this unit too")
    return {**twin, "key": unit.key, "kind": unit.kind, "setting": unit.setting, "same_as": twin["key"]}


def record_failure(out: Path, unit: Unit, error: Exception) -> None:
    """Say why a unit failed (one line) and keep the whole message in ``failures.jsonl``."""
    msg = str(error) if isinstance(error, EgkdError) else traceback.format_exc(limit=3)
    console.print(f"[red]unit {unit.key} failed: {msg.strip().splitlines()[-1]}[/]")
    with (out / "failures.jsonl").open("a") as f:
        f.write(json.dumps({"key": unit.key, "error": msg, "at": datetime.now(timezone.utc).isoformat()}) + "\n")


def run_pass(grid: Grid, pending: list[Unit], deadline: float | None, keep_going: bool,
             failed: list[Unit], start_over: bool = True) -> tuple[set[str], bool]:
    """Run ``pending`` in order once; returns the units skipped because another process sharing ``out`` holds
    them or what they wait for, and whether ``deadline`` (``time.monotonic()``) stopped the pass.

    With ``start_over`` the pass ends early once a unit it skipped has been finished by the other process: the
    caller starts a new pass, so what waited for that unit (a tuned method's seeds) runs now, in the grid's
    order, rather than after every later task's units (a ``--max-hours`` session then ended with a task's seeds
    undone while the next task's tuning ran)."""
    busy: set[str] = set()
    for n, unit in enumerate(pending, 1):
        if deadline is not None and time.monotonic() > deadline:
            console.print(f"[yellow]--max-hours reached: stopping before {unit.key}; rerun to go on[/]")
            return busy, True
        if unit in failed or unit.task in {u.task for u in failed if u.student is None}:
            continue  # failed in this process already; no teacher, no students
        freed = finished_since(grid, pending, busy) if busy else set()
        if freed and start_over:
            return busy, False
        blocker = next((k for k in prerequisites(grid, unit) if k in busy - freed), None)
        if blocker is not None:
            console.print(f"[yellow]{unit.key} waits for {blocker}, which another process is running: skipped[/]")
            busy.add(unit.key)
            continue
        with unit_lock(grid.out, unit) as mine:
            if not mine:
                console.print(f"[yellow]{unit.key} is being run by another process: skipped[/]")
                busy.add(unit.key)
                continue
            done = read_results(grid.out)  # another process may have finished it meanwhile
            if not unfinished(grid, done, unit):
                continue
            rebuild = unit.key in done  # only a teacher whose folder is gone runs again once recorded
            console.rule(f"[{n}/{len(pending)}] {unit.key}" + (" (its folder is missing: trained again)" if rebuild
                                                                else ""))
            try:
                record = settle(grid, done, unit)
                if rebuild:
                    check_rebuilt_teacher(grid, done[unit.key], record)
            except Exception as e:  # one broken unit must not stop a grid that runs for hours
                if not keep_going:
                    raise
                failed.append(unit)
                record_failure(grid.out, unit, e)
                continue
            if not rebuild:  # a rebuilt teacher that reproduces its record keeps that record
                append_record(grid.out, record)
            drop_checkpoint(grid, unit)
    return busy, False


def drop_checkpoint(grid: Grid, unit: Unit) -> None:
    """Delete a recorded unit's resume checkpoint: the unit is never trained again, and weights plus optimizer
    state are 3x its model (a grid of 100 MiniLM-sized units kept 20 GB of them). An external teacher
    (``--teachers``) is not the grid's to touch."""
    if unit.student is None and unit.task in grid.teachers:
        return
    shutil.rmtree(checkpoint_dir(unit.run_dir(grid.out)), ignore_errors=True)


def wait_for_others(grid: Grid, units: list[Unit], busy: set[str], deadline: float | None, poll: float) -> bool:
    """Sleep until a unit another process holds is let go (finished, or its process died: then this one resumes
    it). Returns False when ``deadline`` comes first. Returns at once when a unit that this pass skipped has
    finished meanwhile: what waited for it (a tuned method's seeds) can run now, not after the others."""
    if finished_since(grid, units, busy):
        return True
    held = [u for u in units if u.key in busy and running_elsewhere(grid.out, u)]
    if held:
        behind = len(busy) - len(held)
        console.print(f"waiting for {len(held)} unit(s) another process is running ({held[0].key}"
                      f"{', ...' if len(held) > 1 else ''})" + (f" before the {behind} that wait for them" if behind
                                                                else "") + "; --no-wait stops here instead")
    while held and all(running_elsewhere(grid.out, u) for u in held):
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


RESCORE_EXPLAINERS = ("gxi", "ig")


def needs_rescoring(record: dict[str, Any], explainer: str = "gxi") -> bool:
    """A student unit recorded without faithfulness or without its random-order baseline: scored before egkd
    measured them (faithfulness of students with their own vocabulary, and the random order, until 2026-12-06);
    for ``ig``, a unit without the integrated-gradient columns."""
    if record.get("kind") != "student":
        return False
    if explainer != "gxi":
        suffix = field_suffix(explainer)
        return record.get("consistency" + suffix) is None or record.get("comprehensiveness" + suffix) is None
    return record.get("comprehensiveness") is None or record.get("comprehensiveness_random") is None


def rescore_grid(grid: Grid, tolerance: float = 1e-4, explainer: str = "gxi") -> int:
    """Score again the explanations of the grid's finished units recorded without faithfulness or its random-order
    baseline (:func:`needs_rescoring`), or with ``explainer='ig'`` add the integrated-gradient columns
    (consistency_ig, comprehensiveness_ig, ...: IG at 8 steps from [PAD], teacher's and student's); returns how many.

    Training, dev predictions and speed stay as recorded (:func:`egkd.api.rescore_explanations`); the record's
    explanation columns are replaced in place and ``rescored`` notes when. The consistency, measured again on
    the same model and rows, must come out as recorded: a change means the model or the data moved since, and
    is reported rather than silently taken.
    """
    from egkd import api

    if explainer not in RESCORE_EXPLAINERS:
        raise EgkdError(f"--rescore-explainer must be one of {', '.join(RESCORE_EXPLAINERS)}, not {explainer!r}")
    done = read_results(grid.out)
    units = [u for u in grid.units() if u.key in done and needs_rescoring(done[u.key], explainer)]
    missing = "faithfulness or its random-order baseline" if explainer == "gxi" else f"{explainer} columns"
    console.print(f"[bold]egkd bench glue --rescore[/]: {len(units)} finished unit(s) without {missing}")
    gone = [u.key for u in units if not is_finished(grid.out / done[u.key]["run"])]
    if gone:  # run folders are not committed: a record can come from another machine
        console.print(f"[yellow]{len(gone)} of them have no finished run folder here (e.g. {gone[0]}; run folders "
                      "stay on the machine that trained them): left as recorded[/]")
    scored = 0
    for n, unit in enumerate((u for u in units if u.key not in gone), 1):
        with unit_lock(grid.out, unit) as mine:
            if not mine:
                console.print(f"[yellow]{unit.key} is held by another process; skipped[/]")
                continue
            old = read_results(grid.out)[unit.key]  # now, not at the start: another process may have scored it
            if not needs_rescoring(old, explainer):
                continue
            metrics = api.rescore_explanations(grid.out / old["run"], grid.teacher_dir(unit.task), explainer=explainer,
                                               max_explain_examples=grid.explain_examples, teacher_faithfulness=False,
                                               max_examples=grid.max_eval_examples, show=False)
            new = {**old, **explanation_fields(metrics, explainer),
                   "rescored": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            was, now = old.get("consistency"), new.get("consistency")
            if was is not None and (now is None or abs(now - was) > tolerance):
                console.print(f"[yellow]{unit.key}: consistency {was:.4f} recorded, {now} now; the run or its data "
                              "changed since it was scored[/]")
            replace_records(grid.out, {unit.key: new})
            scored += 1
            suffix = field_suffix(explainer)
            console.print(f"{n}/{len(units) - len(gone)} {unit.key} ({explainer}): consistency "
                          f"{new['consistency' + suffix]:.3f}, comprehensiveness "
                          f"{new['comprehensiveness' + suffix]:.3f}, sufficiency {new['sufficiency' + suffix]:.3f}")
    return scored


def run_grid(grid: Grid, max_hours: float | None = None, dry_run: bool = False, keep_going: bool = True,
             rerun_stale: bool = False, wait: bool = True, poll: float = 30.0) -> tuple[int, int]:
    """Run every unfinished unit in order; returns how many units are still unfinished and how many failed here.

    Finished units whose settings differ from what the grid runs now (its defaults changed) are refused, or,
    with ``rerun_stale``, set aside (kept in ``stale.jsonl``) and run again. Units another process sharing
    ``out`` is running are skipped; with ``wait`` this process then waits for them and runs what they held
    back (a tuned grid's seeds wait for their tuning tries), so two processes started on one command both
    work until the grid is done.
    """
    check_tuning_agrees(grid)  # before the stale check, whose --rerun-stale would set the other grid's tries aside
    grid.out.mkdir(parents=True, exist_ok=True)
    done = read_results(grid.out)
    units = list(grid.units())
    if grid.unpaired():
        console.print(f"[yellow]{grid.unpaired()}[/]")
    if dry_run:
        console.print(plan_table(grid, done), soft_wrap=True)  # a Markdown table: one line per row, unwrapped
        console.print(estimate(grid, done), soft_wrap=True)
        return sum(unfinished(grid, done, u) for u in units), 0
    stale = stale_units(grid, done)
    if stale and rerun_stale:
        drop_stale(grid, stale)
        done, stale = read_results(grid.out), []
    if stale:
        key, differ = stale[0]
        raise EgkdError(f"{grid.out} already holds {len(stale)} unit(s) run with other settings (e.g. {key}: "
                        f"{', '.join(differ)}); rerun with that grid's flags, choose another --out, or --rerun-stale")
    record_grid(grid)
    deadline = None if max_hours is None else time.monotonic() + max_hours * 3600
    failed: list[Unit] = []
    pending = [u for u in units if unfinished(grid, done, u)]
    console.print(f"[bold]egkd bench glue[/]: {len(units) - len(pending)} of {len(units)} units done, "
                  f"{len(pending)} to run, results in {grid.out / 'results.jsonl'}")
    while True:
        busy, out_of_time = run_pass(grid, pending, deadline, keep_going, failed, start_over=wait)
        if not busy or not wait or out_of_time or not wait_for_others(grid, units, busy, deadline, poll):
            break
        done = read_results(grid.out)
        pending = [u for u in units if unfinished(grid, done, u) and u not in failed]
    done = read_results(grid.out)  # with what other processes finished meanwhile
    if busy:
        console.print(f"[yellow]{len(busy)} unit(s) skipped because another process runs them or what they wait "
                      "for; rerun when it has finished[/]")
    retune = stale_units(grid, done) if grid.tune else []
    if retune:  # tuning finished in this run and chose other settings for seeds that had run before it
        console.print(f"[yellow]tuning chose other settings for {len(retune)} finished unit(s) (e.g. {retune[0][0]});"
                      " rerun with --rerun-stale to train them with the tuned settings[/]")
    left = sum(unfinished(grid, done, u) for u in units) + len(retune)
    console.print(f"{len(units) - left} of {len(units)} units done" + (f", {len(failed)} failed (see "
                  f"{grid.out / 'failures.jsonl'})" if failed else ""))
    return left, len(failed)
