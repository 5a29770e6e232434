"""The device side: the ClientApp, the device folder, capture, and the client agent."""
