#!/bin/sh
# Patroni: on_role_change ACTION ROLE CLUSTER. PgBouncer keeps the parameters of its first
# server login (in_hot_standby among them) and hands them to every new client: after a
# promotion a client asking for target_session_attrs=read-write would refuse the new primary.
# Once the server has finished changing, the node's bouncer drops its server connections.
case "$2" in master|primary) want=f ;; *) want=t ;; esac
i=0
while [ $i -lt 120 ]; do
  got=$(psql -U postgres -Atq -d postgres -c "SELECT pg_is_in_recovery()")  # local socket
  [ "$got" = "$want" ] && break
  i=$((i + 1)); sleep 0.25
done
PGPASSWORD="$ANXIN_DB_PASSWORD" exec psql -h 127.0.0.1 -p 6432 -U anxin -Atq -d pgbouncer -c RECONNECT
