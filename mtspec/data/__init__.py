"""Data: sources on disk -> tokenizer -> packed batches -> global arrays."""
