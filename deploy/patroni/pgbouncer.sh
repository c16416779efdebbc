#!/bin/sh
# The bouncer's login list from the environment (never baked into the image).
set -eu
printf '"anxin" "%s"\n' "$ANXIN_DB_PASSWORD" > /etc/pgbouncer/userlist.txt
chmod 0600 /etc/pgbouncer/userlist.txt
exec pgbouncer /etc/pgbouncer/pgbouncer.ini
