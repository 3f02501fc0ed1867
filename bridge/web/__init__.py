"""The web console: pages and the REST API over the journal, served by the daemon."""
