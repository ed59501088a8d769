"""Widgets of the console; each is importable by its module path."""

from .repository_table import RepositoryTable as RepositoryTable
