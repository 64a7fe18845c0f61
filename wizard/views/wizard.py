"""The setup wizard: one generic step view driven by the step registry."""
from flask import Blueprint

bp = Blueprint("wizard", __name__, url_prefix="/setup")
