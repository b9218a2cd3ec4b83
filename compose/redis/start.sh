#!/bin/sh
# Starts Redis for flowfleet: renders the ACL template with the sha256 of each user's password (so the
# file Redis loads holds no clear-text password), then runs redis-server with AOF persistence.
# Refuses to start without passwords: there is no default credential.
set -eu

template=${ACL_TEMPLATE:-/etc/redis/users.acl.template}
data_dir=${REDIS_DATA_DIR:-/data}

for var in REDIS_WORKER_PASSWORD REDIS_CONTROL_PASSWORD; do
    eval "value=\${$var:-}"
    if [ -z "$value" ]; then
        echo "flowfleet redis: $var is empty; set it in compose/.env (see compose/.env.example)" >&2
        exit 1
    fi
done

sha256() { printf '%s' "$1" | sha256sum | cut -d ' ' -f 1; }

umask 077
sed -e "s/__WORKER_PASSWORD_SHA256__/$(sha256 "$REDIS_WORKER_PASSWORD")/" \
    -e "s/__CONTROL_PASSWORD_SHA256__/$(sha256 "$REDIS_CONTROL_PASSWORD")/" \
    "$template" > "$data_dir/users.acl"

# High availability (the `sentinel` profile): the users replicas and sentinels log in as
# (compose/redis/ha-users.acl), and the credentials this node replicates with should it become a replica.
# The configuration file is the node's own, so Sentinel can rewrite it (CONFIG REWRITE) after a failover.
config="$data_dir/redis.conf"
touch "$config"
if [ -n "${REDIS_REPLICATION_PASSWORD:-}${REDIS_SENTINEL_PASSWORD:-}" ]; then
    for var in REDIS_REPLICATION_PASSWORD REDIS_SENTINEL_PASSWORD; do
        eval "value=\${$var:-}"
        if [ -z "$value" ]; then
            echo "flowfleet redis: $var is empty; set it in compose/.env (see compose/.env.example)" >&2
            exit 1
        fi
    done
    sed -e "s/__REPLICATION_PASSWORD_SHA256__/$(sha256 "$REDIS_REPLICATION_PASSWORD")/" \
        -e "s/__SENTINEL_PASSWORD_SHA256__/$(sha256 "$REDIS_SENTINEL_PASSWORD")/" \
        "${HA_ACL_TEMPLATE:-/etc/redis/ha-users.acl.template}" >> "$data_dir/users.acl"
    grep -v '^master\(user\|auth\) ' "$config" > "$config.new" || true
    printf 'masteruser replication\nmasterauth %s\n' "$REDIS_REPLICATION_PASSWORD" >> "$config.new"
    mv "$config.new" "$config"
fi

# The official image's entrypoint hands /data to the redis user and drops root before exec.
exec docker-entrypoint.sh redis-server "$config" \
    --aclfile "$data_dir/users.acl" \
    --dir "$data_dir" \
    --appendonly yes \
    --appendfsync always \
    "$@"
