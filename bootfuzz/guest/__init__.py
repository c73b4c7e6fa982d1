"""guest stage."""
