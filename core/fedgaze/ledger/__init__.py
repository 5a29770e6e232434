"""Signed, hash-chained ledgers: record format and storage, keys, the device's dp-round records."""
