"""What the agent and the hub both run on: the MQTT client and broker settings, units and YAML
configuration, SQLite opening, health, backoff, redaction and the process life cycle. Imports
nothing of the agent's domains or of the hub; only ``edge_agent.wire`` below it."""
