"""The wire contracts fedgaze owns (audit.proto, capture.proto) and their generated code."""
