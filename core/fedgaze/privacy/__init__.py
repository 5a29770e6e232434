"""Differential privacy: DP-SGD, the device's accountant history, client-level DP accounting."""
