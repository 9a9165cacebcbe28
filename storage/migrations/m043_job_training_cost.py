"""Migration 43: what a fine-tuning job cost to train (for break-even in `tuneloop savings`)."""

from __future__ import annotations

from storage.db import Connection


def apply(con: Connection) -> None:
    """The tokens the provider trained on (all epochs), and their cost in USD at the training
    price known when the job was recorded (NULL: price unknown)."""
    con.execute("ALTER TABLE finetune_jobs ADD COLUMN trained_tokens BIGINT")
    con.execute("ALTER TABLE finetune_jobs ADD COLUMN training_cost_usd DOUBLE")
