"""Everything that talks to Kubernetes: rendering a hub's objects, applying them, reading status.

This package is the only one that imports the `kubernetes` client.
"""
