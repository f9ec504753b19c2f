"""The trio network layer: connections, sessions, discovery."""
