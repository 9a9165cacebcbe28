"""From reviewed examples to fine-tuning data and a fine-tuned model.

`examples` (the input type), `formats` (chat, legacy, preference, classification), `checks`,
`legacy_checks`, `tokens` and `report` (validation), `split`, `pipeline` and `exportdir` (the
export directory), `providers` (fine-tuning services), `scoring` (evaluation metrics).
"""
