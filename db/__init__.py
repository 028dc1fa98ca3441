"""Storage: typed SQLAlchemy 2 models and every query Keyplane makes, one module per resource."""
