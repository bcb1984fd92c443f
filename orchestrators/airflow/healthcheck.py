"""Healthcheck of an Airflow job container (scheduler, dag-processor, triggerer).

Contract: exits 0 when the `job` table holds a running job of the given type
on this container's host name that heartbeat within MAX_AGE seconds, else 1
with a reason on stderr. Light on purpose: psycopg2 and one query, not
`airflow jobs check`, which imports all of Airflow (seconds of CPU) on every
probe of a 2-core machine.

    zmqflow-airflow-healthcheck JOB_TYPE [MAX_AGE]   e.g. TriggererJob 60
"""

from __future__ import annotations

import os
import socket
import sys
from urllib.parse import unquote, urlsplit

import psycopg2


def main() -> int:
    job_type = sys.argv[1]
    max_age = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    url = urlsplit(os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    try:
        conn = psycopg2.connect(
            host=url.hostname,
            port=url.port or 5432,
            user=unquote(url.username or ""),
            password=unquote(url.password or ""),
            dbname=url.path.lstrip("/"),
            connect_timeout=5,
        )
    except psycopg2.Error as exc:
        print(f"database unreachable: {exc}", file=sys.stderr)
        return 1
    with conn, conn.cursor() as cur:
        # Airflow records its host name as socket.getfqdn() (hostname_callable default).
        cur.execute(
            "SELECT extract(epoch FROM now() - max(latest_heartbeat)) FROM job "
            "WHERE job_type = %s AND hostname = %s AND state = 'running'",
            (job_type, socket.getfqdn()),
        )
        (age,) = cur.fetchone()
    conn.close()
    if age is None:
        print(f"no running {job_type} on {socket.getfqdn()}", file=sys.stderr)
        return 1
    if age > max_age:
        print(f"{job_type} last heartbeat {age:.0f} s ago", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
