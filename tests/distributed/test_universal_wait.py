"""A changed-world ZeRO resume: while the main rank converts the checkpoint to DeepSpeed's universal format, the
other ranks wait for the conversion's marker file, not in a collective bounded by ddp_timeout."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from smoldist.distributed.elastic import UNIVERSAL_LATEST, prepare_resume


def test_other_ranks_wait_for_the_universal_marker_outside_any_collective(tmp_path):
    ckpt = tmp_path / "checkpoint-4"
    ckpt.mkdir()
    (ckpt / "latest").write_text("global_step4")  # a ZeRO checkpoint
    plugin = SimpleNamespace(deepspeed_config={})
    trainer = SimpleNamespace(accelerator=SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=plugin)))
    done = []
    waiter = threading.Thread(target=lambda: done.append(prepare_resume(trainer, str(ckpt), 2, 1, is_main=False)))
    waiter.start()
    time.sleep(2.5)
    assert waiter.is_alive() and not done  # the conversion (rank 0's) has not finished: keep waiting
    (ckpt / "global_step4_universal").mkdir()
    (ckpt / UNIVERSAL_LATEST).write_text("global_step4_universal")  # written last by convert_to_universal
    waiter.join(timeout=10)
    assert not waiter.is_alive() and done
    assert plugin.deepspeed_config["checkpoint"]["load_universal"] is True
