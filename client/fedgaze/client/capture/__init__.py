"""Capture on the device: browser and native gaze/mouse samples into the encrypted store."""
