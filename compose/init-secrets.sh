#!/bin/sh
# Makes every secret the compose deployment needs, once, with random values:
#   compose/.env                           Redis passwords (the HA users' too) and the control plane's admin
#                                          token
#   compose/secrets/prometheus-token       viewer token Prometheus uses to scrape the control plane
#   compose/secrets/tokens.json            the control plane's token table: sha256 of that token only
#   compose/secrets/grafana-admin-password Grafana's admin password
# Existing files are kept, so running it again changes nothing.
set -eu
cd "$(dirname "$0")"

random() { python3 -c 'import secrets; print(secrets.token_urlsafe(32))'; }
sha256() { printf '%s' "$1" | sha256sum | cut -d ' ' -f 1; }

umask 077
if [ ! -e .env ]; then
    {
        echo "REDIS_WORKER_PASSWORD=$(random)"
        echo "REDIS_CONTROL_PASSWORD=$(random)"
        echo "FLOWFLEET_ADMIN_TOKEN=$(random)"
    } > .env
    echo "wrote compose/.env"
fi
# The high-availability users (profile `sentinel`): added to an .env made before they existed, too.
for name in REDIS_REPLICATION_PASSWORD REDIS_SENTINEL_PASSWORD REDIS_SENTINEL_CLIENT_PASSWORD; do
    if ! grep -q "^$name=." .env; then
        echo "$name=$(random)" >> .env
        echo "added $name to compose/.env"
    fi
done

mkdir -p secrets
if [ ! -e secrets/prometheus-token ]; then
    random | tr -d '\n' > secrets/prometheus-token
    echo "wrote compose/secrets/prometheus-token"
fi
if [ ! -e secrets/tokens.json ]; then
    token=$(cat secrets/prometheus-token)
    printf '[{"name": "prometheus", "role": "viewer", "sha256": "%s"}]\n' "$(sha256 "$token")" > secrets/tokens.json
    echo "wrote compose/secrets/tokens.json"
fi
if [ ! -e secrets/grafana-admin-password ]; then
    random | tr -d '\n' > secrets/grafana-admin-password
    echo "wrote compose/secrets/grafana-admin-password"
fi
# Containers read these as their own non-root users (Prometheus: nobody, Grafana: 472); the directory
# stays private to you on the host.
chmod 700 secrets
chmod 644 secrets/prometheus-token secrets/tokens.json secrets/grafana-admin-password
