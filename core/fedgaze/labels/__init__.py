"""Private preference labels: released on devices with label DP, collected, exported for DPO."""
