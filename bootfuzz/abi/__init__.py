"""Declarations of binary structures: field tables and constants, no logic."""
