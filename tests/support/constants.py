"""Constants shared by the tests and their helpers."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
POSTGRES_URL = os.environ.get("SWITCHYARD_TEST_DATABASE_URL")
DATABASES = ["sqlite"] + (["postgres"] if POSTGRES_URL else [])
PASSWORD = "correct horse battery"
ROLE_USERS = {"viewer": "vera", "operator": "otto", "manager": "mona", "admin": "ada"}
