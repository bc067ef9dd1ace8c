"""The processing app: matters, documents, processing jobs and their pipeline."""
