"""Kafka adapter (`cem.kafka`): connection settings, producers of batches and rows, the topic
admin, a group-less topic reader, murmur2 partitioning and the dead-letter producer. Every
role (connectors, streams, sinks, ops) talks to Kafka through this package; it imports no
other adapter."""
