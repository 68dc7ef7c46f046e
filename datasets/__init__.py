"""Dataset tooling: twins, acquisition, parsers, schemas, validation, splits, co-occurrence.

Note: this package shadows Hugging Face's ``datasets``; install the project editable in its own
virtual environment (see README).
"""

DATASETS = ("deepfashion", "fashionai", "darn")
