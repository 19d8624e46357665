"""An example commit-email plugin: a matcher, an alert parser and an XML action."""

__version__ = "1.0.0"
