"""egkd: explanation guided knowledge distillation for fine-tuned language models."""

__version__ = "0.1.0"
