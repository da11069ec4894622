"""The store under concurrency: temp dirs named by host and pid, a lost rename race reuses the winner's store."""

from __future__ import annotations

import json
import os
import socket

import smoldist.store.writer as writer
from smoldist.store.manifest import MANIFEST
from smoldist.store.writer import StoreWriter


def test_temp_dir_is_named_by_host_and_pid(tmp_path):
    w = StoreWriter(tmp_path, "k")
    assert w.tmp.name == f".tmp-k-{socket.gethostname()}-{os.getpid()}"  # two nodes can share a pid, not a host
    w.abort()


def test_a_lost_rename_race_keeps_the_winners_store(tmp_path, monkeypatch):
    loser = StoreWriter(tmp_path, "k")
    (loser.tmp / "train").mkdir()
    real_rename = os.rename

    def winner_finishes_first(src, dst):  # the race window: another node commits the same key right before our rename
        if str(src) == str(loser.tmp):
            (tmp_path / "winner").mkdir()
            (tmp_path / "winner" / MANIFEST).write_text(json.dumps({"key": "k", "by": "winner"}))
            real_rename(tmp_path / "winner", tmp_path / "k")
        return real_rename(src, dst)

    monkeypatch.setattr(writer.os, "rename", winner_finishes_first)
    final = loser.commit({"inputs": {}})
    assert final == tmp_path / "k"
    assert json.loads((final / MANIFEST).read_text())["by"] == "winner"
    assert not loser.tmp.exists(), "the loser's temp dir is left behind"
