"""What `smoldist prepare` tells a person: a one-screen summary, `report.json` and `report.png`."""

from __future__ import annotations

import json
import multiprocessing as mp
import signal
from pathlib import Path

from smoldist.data.converters import REASONS
from smoldist.store.system_prompt import mixed_prompts_line


def ignored_line(ignored: dict) -> str:
    """'ignored: source in 20,000 records, id in 20,000 records': the fields no format reads, listed once."""
    return "ignored: " + ", ".join(f"{k} in {n:,} record{'s' if n != 1 else ''}" for k, n in ignored.items())


def long_line(long: dict) -> str:
    """How the conversations over seq_len were cut at their turns (data/turn_split.py)."""
    return (
        f"{long['over_seq_len']:,} conversation(s) over seq_len, cut at turn boundaries: {long['split']:,} split into "
        f"{long['pieces']:,} piece(s) ({long['context_trimmed']:,} with their oldest context turns trimmed), "
        f"{long['turns_dropped']:,} assistant turn(s) dropped (too long with their own prompt), "
        f"{long['dropped']:,} conversation(s) dropped whole"
    )


def report_data(manifest: dict) -> dict:
    counts = manifest["counts"]
    return {
        "key": manifest.get("key"),
        "records": {k: counts[k] for k in ("records_read", "records_valid", "records_invalid")},
        "invalid_by_reason": counts["invalid_by_reason"],
        "long_conversations": counts.get("long_conversations", {}),
        "per_source": [
            {k: s.get(k, {}) for k in ("path", "read", "valid", "documents", "tokens", "invalid", "ignored")}
            for s in counts["per_source"]
        ],
        "splits": manifest["splits"],
        "length_histogram": manifest["length_histogram"],
    }


def write_report(directory: Path, manifest: dict, painter: ReportPainter | None = None) -> None:
    data = report_data(manifest)
    (directory / "report.json").write_text(json.dumps(data, indent=2))
    if painter is not None:
        painter.draw(directory / "report.png", data)
    else:
        plot_report(directory / "report.png", data)


class ReportPainter:
    """Draws report.png in a forked process that imports matplotlib (~0.5 s) while this one packs and writes.

    Where fork is missing, or the process fails, the plot is drawn here instead."""

    def __init__(self):
        self.proc = None
        if "fork" in mp.get_all_start_methods():
            ctx = mp.get_context("fork")
            recv, self.conn = ctx.Pipe(duplex=False)
            self.proc = ctx.Process(target=_paint, args=(recv,), daemon=True, name="smoldist-report")
            self.proc.start()
            recv.close()

    def draw(self, path: Path, data: dict) -> None:
        if self.proc is not None:
            self.conn.send((str(path), data))
            self.proc.join(timeout=300)
            ok = self.proc.exitcode == 0
            self.close()
            if ok:
                return
        plot_report(path, data)

    def close(self) -> None:
        """End the process if it was not used (an error in between): it is waiting for data."""
        if self.proc is None:
            return
        if self.proc.is_alive():
            self.proc.terminate()
        self.proc.join(timeout=10)
        self.conn.close()
        self.proc = None

    def __enter__(self) -> ReportPainter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _paint(conn) -> None:
    for sig in (signal.SIGTERM, signal.SIGUSR1):  # not the parent's handlers (training's stop flag)
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    import matplotlib.figure  # noqa: F401 - the slow part, done before the data is ready

    try:
        path, data = conn.recv()
    except EOFError:  # the parent ended without a report to draw
        return
    plot_report(Path(path), data)


def plot_report(path: Path, data: dict) -> None:
    from matplotlib.figure import Figure  # not pyplot: no GUI backend machinery to import (~0.4 s)

    hist = data["length_histogram"]
    fig = Figure(figsize=(10, 3.6))
    ax1, ax2 = fig.subplots(1, 2)
    edges, counts = hist["edges"], hist["counts"]
    ax1.bar(edges[:-1], counts, width=[b - a for a, b in zip(edges[:-1], edges[1:])], align="edge", color="#4c72b0")
    ax1.axvline(hist["seq_len"], color="#c44e52", linestyle="--", label=f"seq_len {hist['seq_len']}")
    ax1.set(title="document length (tokens)", xlabel="tokens", ylabel="documents")
    ax1.legend()
    names = [f"{s}\nfill {v['fill']:.1%}" for s, v in data["splits"].items()]
    kept = [v["tokens"] for v in data["splits"].values()]
    lost = [v["overflow"]["tokens_lost"] for v in data["splits"].values()]
    ax2.bar(names, kept, color="#55a868", label="tokens kept")
    ax2.bar(names, lost, bottom=kept, color="#c44e52", label="tokens lost to overflow")
    ax2.set(title="tokens per split")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def print_summary(path: Path, manifest: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=False, highlight=False)
    counts = manifest["counts"]
    t = Table(title=f"smoldist prepare: store {path}", title_justify="left")
    for col in ("source", "read", "valid", "invalid", "documents", "tokens"):
        t.add_column(col, justify="left" if col == "source" else "right")
    for s in counts["per_source"]:
        t.add_row(
            s["path"],
            f"{s['read']:,}",
            f"{s['valid']:,}",
            f"{sum(s['invalid'].values()):,}",
            f"{s['documents']:,}",
            f"{s['tokens']:,}",
        )
    console.print(t)
    for s in counts["per_source"]:
        for reason, n in s["invalid"].items():
            console.print(f"  skipped {n:,} invalid record(s) in {s['path']}: {REASONS.get(reason, reason)} [{reason}]")
        for line in s["first_invalid"]:
            console.print(f"    e.g. {line}")
        if s.get("ignored"):
            console.print(f"  {s['path']}: {ignored_line(s['ignored'])} (not read by its format; the records train)")
    long = counts.get("long_conversations") or {}
    if long.get("over_seq_len"):
        console.print(f"  {long_line(long)}")
    for split, v in manifest["splits"].items():
        o = v["overflow"]
        lost = f"{o['tokens_lost']:,} tokens lost ({o['docs_truncated']} truncated, {o['docs_dropped']} dropped)"
        console.print(
            f"  {split}: {v['documents']:,} documents -> {v['rows']:,} rows, {v['tokens']:,} tokens "
            f"({v['trained_tokens']:,} trained), fill {v['fill']:.2%}; {o['docs_split']} split; {lost}"
        )
        if "pairs" in v:  # a preference store (store/pair_build.py)
            console.print(
                f"  {split}: {v['pairs']:,} pairs, {v['pairs_per_row']:.2f} pairs per row; "
                f"{o['pairs_truncated']} truncated from the prompt's start, {o['pairs_dropped']} dropped"
            )
    console.print(f"  took {manifest['seconds']['total']:.2f} s; report: {path / 'report.png'}")
    mixed = mixed_prompts_line(counts.get("system_prompt") or {})
    if mixed:
        console.print(f"  note: {mixed}")
