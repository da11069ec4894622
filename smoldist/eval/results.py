"""What `smoldist eval` leaves behind: a result as JSON, and the gsm8k table on screen."""

from __future__ import annotations

import json
from pathlib import Path


def write_json(out: str | None, result: dict) -> None:
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=1, ensure_ascii=False))


def print_gsm8k(result: dict, show: int = 10, file=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file, highlight=False)
    table = Table(title=f"gsm8k: {result['model']}", show_lines=False)
    for col in ("#", "gold", "extracted", "by", "ok"):
        table.add_column(col, no_wrap=True)
    table.add_column("question", no_wrap=True, overflow="ellipsis", max_width=max(20, console.width - 50))
    for i, r in enumerate(result["records"][:show]):
        table.add_row(
            str(i),
            r["gold"],
            str(r["extracted"]),
            r["extracted_by"].split()[0],
            "yes" if r["correct"] else "no",
            r["question"],
        )
    console.print(table)
    by = result["extracted_by"]
    console.print(
        f"accuracy {result['accuracy']:.1%} ({result['correct']}/{result['n']}); answers read from '####': "
        f"{by.get('####', 0)}, last number (fallback): {by.get('last number', 0)}, none: {by.get('none', 0)}"
        + (f"; skipped records: {result['skipped']}" if result["skipped"] else "")
    )
