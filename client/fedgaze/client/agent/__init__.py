"""The client agent: enrollment, configuration and the supervised capture + SuperNode tree."""
