"""Playing a neural world: the pygame-ce viewer."""
