"""distgen: a training harness for generative and domain-adaptation models.

Train with `accelerate launch launch/train.py RECIPE.yaml [key=value ...]`; see README.md.
"""
from distgen.errors import ConfigError, DataError

__all__ = ["ConfigError", "DataError"]
