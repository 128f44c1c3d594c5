"""Running everything on one machine: ``aimeter up`` and the local Kafka broker.

``kafka.py`` runs a single-node Apache Kafka (KRaft) from the jars ``kafka_jars.py`` fetches from Maven
Central; ``stack.py`` starts Kafka, pricer, gateway and fake upstream as child processes; ``up.py``
supervises them and shows what ClickHouse recorded; ``demo.py`` drives synthetic traffic with the
official SDKs.
"""
