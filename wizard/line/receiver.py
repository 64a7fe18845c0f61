"""POST /line/webhook/<token>: verify, store, acknowledge; nothing else (see worker.py for the rest)."""
from flask import Blueprint

bp = Blueprint("receiver", __name__)
