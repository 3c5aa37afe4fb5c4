"""OpenStack Ironic and Glance notifications, from RabbitMQ to Kafka, and the stream agents on them."""

__version__ = "0.1.0"
