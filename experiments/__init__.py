"""Experiment scripts (`python experiments/<name>.py`) and what they share (`summary`)."""
