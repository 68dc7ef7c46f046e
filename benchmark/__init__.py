"""Training, retrieval, metrics, evaluation and reports."""
