"""`flows verify`'s read side: walking the log (`log_walk`), comparing the live model with a
replay (`model_diff`), and the report a person reads (`report`)."""
