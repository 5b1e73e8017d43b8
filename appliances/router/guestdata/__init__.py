"""The metadata, user-data and password service's parts (served by the agent itself)."""
