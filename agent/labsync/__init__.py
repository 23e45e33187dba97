"""The lab side: the member list taken straight from the lab's own system.

`sources` fetch the members (a CSV or XLSX file or URL, Fabman's API),
`merge` adds what machines granted that the source does not hold yet, `diff`
says what a new list changes, and `sync` decides whether to publish it. This
runs on the broker or logbook host, never on a machine's Pi.
"""
