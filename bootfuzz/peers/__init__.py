"""peers stage."""
