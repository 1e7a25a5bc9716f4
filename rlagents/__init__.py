"""rlagents: a reinforcement-learning agent suite with one training loop and many agents."""

__version__ = "0.1.0"
