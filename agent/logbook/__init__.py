"""The technicians' logbook: an archive of every machine's events and the sessions built from them.

`store` owns the database, `collector` feeds it from MQTT, `queries`,
`maintenance` and `privacy` read and prune it, `web` shows it.
"""
