"""The projections service: read models, reports, the coordinator's board, rebuild and replay."""
