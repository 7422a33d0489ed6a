"""The station agent (DESIGN §8): dock doors, bays, cameras and scanners, load verification."""
