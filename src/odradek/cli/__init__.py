"""odradek."""
