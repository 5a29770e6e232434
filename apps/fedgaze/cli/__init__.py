"""The fedgaze command line (the one console script)."""
