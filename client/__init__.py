"""fedgaze."""
