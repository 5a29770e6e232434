"""Everything that runs both sides on one machine: the local launcher, demo, central training."""
