"""Safety checks on answers and documents beyond patterns and word lists (toxicity)."""
