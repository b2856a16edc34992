"""Foundations every package uses: file I/O and errors, paths, git and DVC, problem collection, relative paths."""
