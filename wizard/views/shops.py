"""Staff pages: every shop with its status; creating shops and owner accounts."""
from flask import Blueprint

bp = Blueprint("shops", __name__, url_prefix="/shops")
