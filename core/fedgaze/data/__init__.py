"""Data: the in-memory schema of devices and queries, the IFLLM loader, the synthetic cohort."""
