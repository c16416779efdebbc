"""Scripted scenarios: the file format (model.py), the player (player.py), the checks of
the outcomes (checks.py) and their report (render.py). The files are device_sim/scenarios/."""
