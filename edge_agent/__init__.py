"""Edge agent of the last-mile delivery tracker: van gateway and station agent."""

__version__ = "0.4.4"
