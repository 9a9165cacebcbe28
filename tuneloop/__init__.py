"""tuneloop: turn production LLM traffic into fine-tuning data and ship the better model back."""

__version__ = "0.1.0"
