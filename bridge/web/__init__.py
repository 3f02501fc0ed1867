"""The web server: FastAPI inside the daemon's loop, serving the routers the features offer."""
