"""Text for the text reward model: frozen on-device encoders and the features built on them."""
