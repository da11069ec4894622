"""Where a recipe's input paths point: relative paths in a recipe file are read from the file's folder, relative
paths given on the command line from the current directory; `pkg:` paths and hub ids stay as written.

    data: {sources: [{path: data/chats.jsonl}]}   # in ~/project/my.yaml: ~/project/data/chats.jsonl, from any cwd

The loaded recipe (and the copy saved with a run) holds absolute paths, so it reads the same files from anywhere.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from smoldist.config.recipe import PKG_PREFIX

LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")  # the data files a source can be
TEMPLATE_SUFFIX = ".jinja"


def looks_local(path: str) -> bool:
    """A path that can only be a local file (not a hub id): './x', '/x', '~/x', 'x.jsonl', a glob."""
    return (
        path.startswith((".", "/", "~"))
        or path.endswith((*LOCAL_SUFFIXES, TEMPLATE_SUFFIX))
        or any(c in path for c in "*?[")
    )


def anchor(path: Any, base: Path) -> Any:
    """`path` from `base` when it is a relative local path (or names something under `base`); else unchanged."""
    if not isinstance(path, str) or not path or path.startswith(PKG_PREFIX) or os.path.isabs(path):
        return path
    if path.startswith("~"):
        return os.path.expanduser(path)
    if looks_local(path) or (base / path).exists():
        return os.path.normpath(base / path)
    return path  # a hub id, or a bundled template name (smollm2)


def anchor_paths(raw: Any, base: Path) -> None:
    """Anchor the recipe's input paths (sources, model, tokenizer, template, end-of-run eval data) in place."""
    if not isinstance(raw, dict):
        return
    model, data, tracking = (raw.get(k) if isinstance(raw.get(k), dict) else {} for k in ("model", "data", "tracking"))
    for key in ("name_or_path", "tokenizer"):
        if key in model:
            model[key] = anchor(model[key], base)
    template = model.get("chat_template")
    if isinstance(template, str) and template.endswith(TEMPLATE_SUFFIX):  # else a name: smollm2, chatml, tokenizer
        model["chat_template"] = anchor(template, base)
    for source in data.get("sources") or [] if isinstance(data.get("sources"), list) else []:
        if isinstance(source, dict) and "path" in source:
            source["path"] = anchor(source["path"], base)
    if isinstance(tracking.get("eval"), dict) and "data" in tracking["eval"]:
        tracking["eval"]["data"] = anchor(tracking["eval"]["data"], base)
