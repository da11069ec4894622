"""The tables bench/train_throughput.py prints and the ratios it records: per run, and each path under its fastest
attention (bench/gpu/merge_results.py recomputes the latter over several runs)."""

from __future__ import annotations


def fmt(v, spec: str, none: str = "-") -> str:
    return none if v is None else format(v, spec)


def print_table(configs: list[dict]) -> None:
    head = (
        f"{'config':26s} {'path':11s} {'batch':>5s} {'tok/s':>11s} {'trained/s':>11s} {'MFU':>6s} {'TFLOP/s':>8s} "
        f"{'step s':>7s} {'peak GB':>8s} {'tok/step':>9s} {'trn/step':>9s} {'pad':>6s}"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for c in configs:
        for path, r in c["paths"].items():
            label = f"{c['shape']}@{c['seq_len']}/{c['attn']}"
            if "error" in r:
                print(f"{label:26s} {path:11s} {'FAILED: ' + r['error']}")
                continue
            print(
                f"{label:26s} {path:11s} {r['batch_size']:>5d} {r['tokens_per_s']:>11,.0f} "
                f"{r['trained_tokens_per_s']:>11,.0f} {fmt(r['mfu'], '>6.1%'):>6s} {r['tflops']:>8.3g} "
                f"{r['step_time_s']:>7.3f} {fmt(r['peak_memory_gib'], '>8.2f'):>8s} "
                f"{r['tokens_per_step']:>9,.0f} {r['trained_tokens_per_step']:>9,.0f} {r['padding_fraction']:>6.1%}"
            )
    print()
    for c in configs:
        ratios = ", ".join(f"{k} {v:.2f}x" for k, v in c["ratios"].items())
        print(f"{c['shape']}@{c['seq_len']}/{c['attn']}: tokens/s ratios: {ratios or 'n/a'}")
        logged = c["paths"].get("smoldist", {}).get("logged")
        if logged:
            print(
                f"  smoldist's own perf/* logs over the same steps: {logged['tokens_per_s']:,.0f} tok/s, "
                f"trained {logged['trained_tokens_per_s']:,.0f} tok/s, MFU {fmt(logged.get('mfu'), '.1%')}, "
                f"data wait {logged['data_wait_fraction']:.1%}"
            )


def ratios(paths: dict) -> dict:
    ok = {p: r for p, r in paths.items() if "error" not in r}
    out = {}
    if "smoldist" in ok:
        for base in ("trl-nopack", "trl-bfd"):
            if base in ok:
                out[f"smoldist/{base}"] = ok["smoldist"]["tokens_per_s"] / ok[base]["tokens_per_s"]
    return out


def best_attention(configs: list[dict]) -> list[dict]:
    """Per (shape, seq_len): each path under its fastest attention, and smoldist's ratios on those."""
    out = {}
    for c in configs:
        entry = out.setdefault((c["shape"], c["seq_len"]), {"shape": c["shape"], "seq_len": c["seq_len"], "paths": {}})
        for path, r in c["paths"].items():
            if "error" not in r and r["tokens_per_s"] > entry["paths"].get(path, {}).get("tokens_per_s", 0):
                entry["paths"][path] = {"attn": c["attn"], "tokens_per_s": r["tokens_per_s"], "mfu": r["mfu"]}
    for entry in out.values():
        entry["ratios"] = ratios(entry["paths"])
    return list(out.values())


def print_best(best: list[dict]) -> None:
    print("\neach path under its fastest attention:")
    for e in best:
        paths = ", ".join(
            f"{p} {r['tokens_per_s']:,.0f} tok/s ({r['attn']}{', MFU ' + format(r['mfu'], '.1%') if r['mfu'] else ''})"
            for p, r in e["paths"].items()
        )
        ratios_ = ", ".join(f"{k} {v:.2f}x" for k, v in e["ratios"].items())
        print(f"  {e['shape']}@{e['seq_len']}: {paths}; {ratios_ or 'n/a'}")
