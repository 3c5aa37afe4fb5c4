"""The fleet simulator: `fleet` (the lifecycle model), `payloads` (shaped like the real services),
`faults` (loss, duplicates, reordering, recorded as ground truth), `outputs` (RabbitMQ through oslo,
Kafka relay topics, stdout) and `command` (`pipeline simulate`)."""
