"""Side-by-side explanation views of a teacher and its students: one HTML page and one PNG per example.

The numbers of :mod:`egkd.evaluation.explanations` say *how much* a student's explanations agree with its
teacher's; these views show *where* they differ, which is what one looks at before trusting a number. The
page is a single self-contained file (inline CSS, no scripts, fonts or images loaded from anywhere), so it
can be attached to a run folder, mailed or opened offline. PNGs are drawn with matplotlib's Agg canvas
directly (no pyplot, no global backend switch), so this works headless and in threads.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn
from transformers import PreTrainedTokenizerBase

from egkd.data.tasks import TaskSpec, get_task
from egkd.data.tokenize import Collator, tokenize_split
from egkd.errors import EgkdError
from egkd.evaluation.explanations import consistency, predict_targets
from egkd.explain import Explainer, get_explainer, unit_mask
from egkd.explain.occlusion import with_mask_token

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 2em; }
table { border-collapse: collapse; margin-top: .5em; }
td, th { padding: .3em .6em; vertical-align: top; text-align: left; border-bottom: 1px solid #eee; }
th { font-weight: 600; white-space: nowrap; }
.tokens span { display: inline-block; margin: 1px; padding: 1px 3px; border-radius: 3px; }
.tokens span.special { color: #999; }
.meta { color: #555; font-size: .9em; }
"""


def _color(value: float) -> str:
    """Diverging background: red for support of the explained class, blue against, alpha = |value|."""
    alpha = min(1.0, abs(value))
    rgb = "220,38,38" if value >= 0 else "37,99,235"
    return f"rgba({rgb},{alpha:.3f})"


def _label_text(spec: TaskSpec, value: float | int) -> str:
    if spec.is_regression:
        return f"{float(value):.3f}"
    value = int(value)
    if value < 0:
        return "unlabeled"
    return spec.label_names[value] if value < len(spec.label_names) else str(value)


def _tokenized(examples: list[Mapping[str, Any]], tokenizer: PreTrainedTokenizerBase, spec: TaskSpec,
               max_seq_length: int) -> datasets.Dataset:
    """Tokenize raw examples (``text_a``, optional ``text_b``, ``label``) exactly as training does."""
    columns: dict[str, list] = {"text_a": [str(e["text_a"]) for e in examples]}
    if spec.is_pair:
        columns["text_b"] = [str(e.get("text_b", "")) for e in examples]
    default = -1.0 if spec.is_regression else -1
    columns["label"] = [e.get("label", default) for e in examples]
    columns["idx"] = [int(e.get("idx", i)) for i, e in enumerate(examples)]
    return tokenize_split(datasets.Dataset.from_dict(columns), tokenizer, spec, max_seq_length)


def _png(path: Path, tokens: list[str], names: list[str], rows: list[np.ndarray]) -> None:
    """The example's heatmap rows as an image: one row per model, tokens along the x axis."""
    matrix = np.stack(rows)
    fig = Figure(figsize=(max(4.0, 0.5 * len(tokens) + 1.5), 0.6 * len(names) + 1.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(matrix, cmap="RdBu_r", vmin=-1.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(tokens)))
    # '$' would start matplotlib mathtext; escaped it is drawn literally
    ax.set_xticklabels([t.replace("$", r"\$") for t in tokens], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels([n.replace("$", r"\$") for n in names], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)


def write_explanation_page(out_dir: str | Path, task: str | TaskSpec, examples: Iterable[Mapping[str, Any]],
                           models: Mapping[str, nn.Module], tokenizer: PreTrainedTokenizerBase,
                           explainer_spec: str | Explainer = "gxi", max_examples: int | None = None,
                           max_seq_length: int = 128) -> Path:
    """Write ``out_dir/index.html`` and ``out_dir/example_NNN.png`` for the first ``max_examples`` examples.

    ``examples`` are raw rows as :func:`egkd.data.glue.load_split` returns them (``text_a``, ``text_b``
    for pairs, ``label``, ``idx``). ``models`` maps display names to classifiers sharing ``tokenizer``; the
    first entry is the teacher (reference). Every row explains the *teacher's* predicted class, so the
    colors of all rows answer the same question and the Spearman shown per student is exactly the one
    :func:`~egkd.evaluation.explanations.consistency` computes; each row still shows that model's own
    prediction and its probability. Rows are scaled by their own max |score| (scales differ across models).
    Returns the page's path.
    """
    if not models:
        raise EgkdError("write_explanation_page needs at least one model (the teacher first)")
    spec = get_task(task)
    rows = list(examples)
    if max_examples is not None:
        rows = rows[:max_examples]
    if not rows:
        raise EgkdError("write_explanation_page got no examples to show")
    explainer = get_explainer(explainer_spec) if isinstance(explainer_spec, str) else explainer_spec
    explainer = with_mask_token(explainer, getattr(tokenizer, "mask_token_id", None))  # occlusion: the [MASK]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ds = _tokenized(rows, tokenizer, spec, max_seq_length)
    batch = Collator(tokenizer, is_regression=spec.is_regression)([ds[i] for i in range(len(ds))])
    names = list(models)
    teacher_name = names[0]

    logits: dict[str, torch.Tensor] = {}
    preds: dict[str, torch.Tensor] = {}
    for name, model in models.items():
        model.eval()
        logits[name], preds[name] = predict_targets(model, batch)
    target = preds[teacher_name]
    maps: dict[str, torch.Tensor] = {}
    for name, model in models.items():
        device = next(model.parameters()).device
        on = {k: v.to(device) for k, v in batch.items()}
        maps[name] = explainer.attribute(model, on, target.to(device)).detach().cpu().double()
    mask = unit_mask(batch)
    rho = {name: consistency(maps[teacher_name], maps[name], mask)["spearman_per_example"] for name in names[1:]}

    sections: list[str] = []
    for i in range(len(rows)):
        length = int(batch["attention_mask"][i].sum())
        ids = batch["input_ids"][i, :length].tolist()
        tokens = tokenizer.convert_ids_to_tokens(ids)
        units = mask[i, :length].tolist()
        png_rows: list[np.ndarray] = []
        table_rows: list[str] = []
        for name in names:
            scores = maps[name][i, :length].numpy()
            scale = float(np.abs(scores).max()) or 1.0
            scaled = scores / scale
            png_rows.append(scaled)
            spans = "".join(
                f'<span style="background:{_color(v)}" title="{s:+.4f}">{html.escape(t)}</span>' if u
                else f'<span class="special">{html.escape(t)}</span>'
                for t, v, s, u in zip(tokens, scaled, scores, units, strict=True)
            )
            row_logits = logits[name][i]
            if spec.is_regression:
                pred_text = f"{float(row_logits[0]):.3f}"
            else:
                p = float(row_logits.double().softmax(-1)[int(preds[name][i])])
                pred_text = f"{html.escape(_label_text(spec, int(preds[name][i])))} (p={p:.3f})"
            if name == teacher_name:
                agree = "teacher"
            else:
                value = rho[name][i]
                agree = f"&rho;={value:+.3f}" if np.isfinite(value) else "&rho;=n/a"
            table_rows.append(f"<tr><th>{html.escape(name)}</th><td>{pred_text}</td><td>{agree}</td>"
                              f'<td class="tokens">{spans}</td></tr>')
        png_name = f"example_{i:03d}.png"
        _png(out / png_name, tokens, names, png_rows)
        gold = _label_text(spec, batch["labels"][i].item()) if "labels" in batch else "unlabeled"
        sections.append(
            f'<section><h2>Example {i + 1} (idx {int(batch["idx"][i])})</h2>'
            f'<div class="meta">gold: {html.escape(gold)} &middot; <a href="{png_name}">image</a></div>'
            "<table><tr><th>model</th><th>prediction</th><th>Spearman vs teacher</th><th>tokens</th></tr>"
            + "".join(table_rows) + "</table></section>"
        )
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>egkd explanations: {html.escape(spec.name)}</title><style>{_CSS}</style></head><body>"
        f"<h1>Explanations on {html.escape(spec.name)} ({html.escape(repr(explainer))})</h1>"
        f"<p class=\"meta\">Every row explains the teacher's ({html.escape(teacher_name)}) predicted class; "
        "red supports it, blue argues against it; each row is scaled by its own largest |score|. "
        "Grey tokens are special tokens, which carry no attribution.</p>"
        + "".join(sections) + "</body></html>\n"
    )
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
