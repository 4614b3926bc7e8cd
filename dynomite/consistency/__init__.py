"""consistency."""
