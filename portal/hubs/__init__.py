"""Hubs: models, lifecycle, services, forms, views, admin and the REST API."""
