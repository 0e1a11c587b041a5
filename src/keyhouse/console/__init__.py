"""The web console under /console: server-rendered pages calling the same services as the API."""
