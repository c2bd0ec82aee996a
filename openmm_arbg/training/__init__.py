"""Training an ArBG: maximum likelihood on MD frames, and self-training by importance sampling."""

from .self_training import SelfTrainer, SelfTrainingConfig, temperature_ladder
from .trainer import Trainer, TrainingConfig, check_memory, load_trajectories, time_block_split, trajectory_frame_weights

__all__ = ["Trainer", "TrainingConfig", "SelfTrainer", "SelfTrainingConfig", "temperature_ladder", "load_trajectories",
           "time_block_split", "trajectory_frame_weights", "check_memory"]
