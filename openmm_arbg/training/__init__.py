"""Training an ArBG on MD frames by maximum likelihood."""

from .trainer import Trainer, TrainingConfig, check_memory, load_trajectories, time_block_split

__all__ = ["Trainer", "TrainingConfig", "load_trajectories", "time_block_split", "check_memory"]
