"""Stage 3, ranks and their state: what every process of a job agrees on.

Takes nothing from the recipe but `train.ddp_timeout`; gives the world (rank, size, main process), the
collectives all ranks join, checkpoints that are complete, a stop that every rank obeys, and a resume that
survives a change in the number of processes.

    state.py        rank, world size, main-process checks, collectives, engine and device facts
    checkpoints.py  the COMPLETE marker, the last complete checkpoint, the world that wrote it, RNG per rank
    preemption.py   a stop signal -> checkpoint at the step boundary -> requeue
    elastic.py      resume on a different number of processes (DDP as is, ZeRO through universal checkpoints)
    fingerprint.py  a whole-model sha256 and probe logits per rank, whatever engine sharded the model
"""
