"""Marshmallow schemas: what goes in and out of the API (and into the OpenAPI spec)."""
