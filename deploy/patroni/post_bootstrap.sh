#!/bin/sh
# Patroni, once, on the node that initialised the cluster: the platform's login and database
# (Alembic creates the schema: `anxin db upgrade`, the migrate job).
set -eu
psql -v ON_ERROR_STOP=1 -d "$1" <<SQL
CREATE ROLE anxin LOGIN PASSWORD '${ANXIN_DB_PASSWORD}';
CREATE DATABASE anxin OWNER anxin;
SQL
