"""Query API endpoints: saved queries with their own keys, roles and origins, run at
``/run/{endpointId}`` (version 1 documents and version 2 streams)."""
