"""``flask --app wizard sandbox …``: play the LINE side (channels, switches, users who follow and talk)."""
from flask.cli import AppGroup

sandbox_cli = AppGroup("sandbox", help="Play the LINE side in the built-in sandbox.")
