"""The contract every stage shares: the line format, the validation rules, the clean message and the stored document."""
