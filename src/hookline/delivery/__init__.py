"""The delivery engine: claiming due deliveries, sending them, and recording what happened."""
