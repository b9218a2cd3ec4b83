#!/bin/sh
# Starts one Redis Sentinel of the `sentinel` profile: monitors the service `flowfleet` (first primary:
# the `redis` service), logs in to the data nodes as their `sentinel` user, to the other sentinels as
# theirs, and lets flowfleet in only as `flowfleet`, allowed the SENTINEL reads that find the primary.
# Sentinel rewrites its configuration as the topology changes, so it lives in the data directory.
set -eu

template=${SENTINEL_TEMPLATE:-/etc/redis/sentinel-auth.conf.template}
data_dir=${SENTINEL_DATA_DIR:-/data}

for var in REDIS_SENTINEL_PASSWORD REDIS_SENTINEL_CLIENT_PASSWORD; do
    eval "value=\${$var:-}"
    if [ -z "$value" ]; then
        echo "flowfleet sentinel: $var is empty; set it in compose/.env (run compose/init-secrets.sh)" >&2
        exit 1
    fi
done

sha256() { printf '%s' "$1" | sha256sum | cut -d ' ' -f 1; }

umask 077
conf="$data_dir/sentinel.conf"
if [ ! -e "$conf" ]; then
    {
        echo "port 26379"
        echo "sentinel resolve-hostnames yes"
        echo "sentinel monitor flowfleet ${SENTINEL_PRIMARY:-redis} ${SENTINEL_PRIMARY_PORT:-6379} 2"
        echo "sentinel down-after-milliseconds flowfleet ${SENTINEL_DOWN_AFTER_MS:-5000}"
        echo "sentinel failover-timeout flowfleet 60000"
        echo "sentinel parallel-syncs flowfleet 1"
        sed -e "s/__SENTINEL_PASSWORD_SHA256__/$(sha256 "$REDIS_SENTINEL_PASSWORD")/" \
            -e "s/__SENTINEL_CLIENT_PASSWORD_SHA256__/$(sha256 "$REDIS_SENTINEL_CLIENT_PASSWORD")/" \
            -e "s/__SENTINEL_PASSWORD__/$REDIS_SENTINEL_PASSWORD/" \
            "$template"
    } > "$conf"
fi

exec docker-entrypoint.sh redis-server "$conf" --sentinel "$@"
