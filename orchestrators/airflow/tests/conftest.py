"""Fast tests of the provider's pure modules (no Airflow, no Docker).

Run: .venv/bin/pytest orchestrators/airflow/tests (the host venv has no
Airflow; these modules do not import it).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "provider" / "src"))
