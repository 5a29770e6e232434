"""Behaviour and text features: each query's traces turned into fixed per-side vectors."""
