"""Recipes for running the flows service: a local cluster of plain processes (`local_cluster`),
and the files `docker-compose.yml` mounts (`nats/`)."""
