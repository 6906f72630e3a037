"""Complete training jobs (translation, summarization) built on s2s."""
