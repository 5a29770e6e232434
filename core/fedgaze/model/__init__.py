"""The pairwise reward model, its on-device personal head, model directories."""
