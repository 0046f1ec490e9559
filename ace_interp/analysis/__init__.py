"""Analyses built on attribution: query→value pathways (`pathways`)."""
