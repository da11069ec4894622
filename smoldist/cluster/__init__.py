"""Beside the stages, the launch side: how a recipe gets from one command line to every rank.

Takes a recipe path, overrides and resource flags; gives processes: `accelerate launch` commands per node,
Slurm jobs (prepare, then train after it), and the shipped accelerate configs, sbatch and node scripts.

    launcher.py  the per-node `accelerate launch` command and `--dry-run`
    spawn.py     running it: stop signals to the trainers, a rank's one-line error as the job's one line
    submit.py    `smoldist submit`: a prepare job and a train job that starts after it
    shipped.py   files smoldist ships besides code (accelerate_configs/, slurm/, launch/)
"""
