"""Datasets into uint8 arrays: official sources, image folders, the prepared folder."""
