"""Screens of the console: repository detail, confirmation, help."""
