"""smoldist: distributed supervised fine-tuning of chat models with TRL, from a laptop to a Slurm cluster."""

__version__ = "0.1.0"
