"""Shared by the AlpacaEval generation tests: three instructions of two datasets, as an instructions file."""

import json

INSTRUCTIONS = [
    {"instruction": "Write a short movie review.", "dataset": "toy"},
    {"instruction": "Is the film good?", "dataset": "toy"},
    {"instruction": "Describe the actor.", "dataset": "other"},
]


def write_instructions(folder, rows=INSTRUCTIONS):
    """``rows`` as ``folder/instructions.json`` (the --instructions file); returns its path."""
    path = folder / "instructions.json"
    path.write_text(json.dumps(rows))
    return path
