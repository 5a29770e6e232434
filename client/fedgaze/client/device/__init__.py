"""The device folder: its layout, the pause marker, the encrypted store, the device's own data."""
