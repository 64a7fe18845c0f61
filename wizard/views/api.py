"""JSON API for staff tools: ``GET /api/v1/shops/<slug>/status``."""
from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api/v1")
