"""Reports of a generation evaluation: a JSON document (metrics and every reply) and a
Markdown summary, with a second model's scores and replies side by side when one was
compared. Both are written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.bundle import atomic_write_json, atomic_write_text

METRIC_NAMES = (
    ("bleu", "BLEU"),
    ("rouge_l", "ROUGE-L"),
    ("slot_coverage", "Slot coverage"),
    ("slots_missing", "Slot values missing"),
)
"""The metrics a report shows, in order, with their labels (absent ones are skipped)."""


def format_metric(key: str, value: Any) -> str:
    """A metric as the report prints it (BLEU and ROUGE-L to 2 decimals, coverage to 3)."""
    if value is None:
        return "-"
    if key == "slots_missing":
        return str(int(value))
    if key == "slot_coverage":
        return f"{value:.3f}"
    return f"{value:.2f}"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|") or "*(empty)*"


def _prompt_text(messages: list[dict[str, str]]) -> str:
    users = [m["content"] for m in messages if m["role"] == "user"]
    return users[-1] if users else messages[-1]["content"]


def render_generation_markdown(report: dict[str, Any]) -> str:
    """The Markdown summary of a report built by the CLI's generation eval.

    Args:
        report: ``{"data", "settings", "models": [summary, ...], "examples": [...]}``
            where each example has ``line``, ``messages``, ``references``, optional
            ``mr``, ``output`` and, when compared, ``compare_output``.
    """
    models = report["models"]
    lines = [f"# Generation evaluation on {report['data']}", ""]
    settings = report["settings"]
    lines.append(
        f"{report['metrics']['examples']} prompts, greedy decoding, at most "
        f"{settings['max_tokens'] or 'the default number of'} tokens per reply."
    )
    lines += ["", "| Metric | " + " | ".join(f"`{m['model']}`" for m in models) + " |"]
    lines.append("|---|" + "---:|" * len(models))
    for key, label in METRIC_NAMES:
        if all(key not in m["metrics"] for m in models):
            continue
        values = [format_metric(key, m["metrics"].get(key)) for m in models]
        lines.append(f"| {label} | " + " | ".join(values) + " |")
    lines.append("| Generation time (s) | " + " | ".join(str(m["seconds"]) for m in models) + " |")
    lines.append("| Tokens/s | " + " | ".join(str(m["tokens_per_second"]) for m in models) + " |")
    lines.append(
        "| Replies cut at the token limit | "
        + " | ".join(str(m["cut_at_max_tokens"]) for m in models)
        + " |"
    )
    lines += [
        "",
        "BLEU: sacrebleu corpus BLEU against all references of each prompt. ROUGE-L: "
        "F-measure against the best-matching reference, averaged (0-100). Slot coverage: "
        "the share of replies that mention every attribute value of their meaning "
        "representation.",
        "",
        "## Replies",
        "",
    ]
    header = "| Line | Prompt | " + " | ".join(f"`{m['model']}`" for m in models)
    lines += [header + " | A reference |", "|---:|---|" + "---|" * (len(models) + 1)]
    for example in report["examples"]:
        replies = [example["output"]]
        if len(models) > 1:
            replies.append(example["compare_output"])
        prompt = example.get("mr") or _prompt_text(example["messages"])
        cells = [str(example["line"]), _cell(prompt), *map(_cell, replies)]
        cells.append(_cell(example["references"][0]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_generation_report(report: dict[str, Any], json_path: Path, md_path: Path) -> None:
    """Write the report as JSON and its Markdown summary, each atomically."""
    atomic_write_json(json_path, report)
    atomic_write_text(md_path, render_generation_markdown(report))
