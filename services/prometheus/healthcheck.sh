#!/usr/bin/env bash
# Container healthcheck: exit 0 when Prometheus answers /-/ready with 200
# within 5 s. bash's /dev/tcp: the image has no curl, and a Python
# interpreter per probe would cost more than the probe is worth.
set -euo pipefail
exec 3<>"/dev/tcp/127.0.0.1/${PROMETHEUS_PORT:-9090}"
printf 'GET /-/ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
read -r -t 5 _ status _ <&3
[[ $status == 200 ]]
