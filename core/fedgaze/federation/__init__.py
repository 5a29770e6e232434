"""The federation contract: message content, flat settings, model arrays, Flower processes."""
