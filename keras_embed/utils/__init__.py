"""Helpers that every wing may use: nothing here knows about layers."""
