"""The stream agents: dedup by message_id, operation pairing, node state and the missing-end watchdog.

The pure parts (`models`, `dedup`, `nodes`, `operations`, `watchdog`) import no faust; `app`,
`agents` and `command` are the faust shell around them.
"""
