"""The wire contract both ends speak (DESIGN §2): envelopes and their registry, topic names,
size limits, seq ranges and the bounded JSON decoder. Imports nothing else of the project."""
