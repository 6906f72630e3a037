"""Length-aware samplers: sortish, length-grouped and token-budget; distributed and resumable."""
