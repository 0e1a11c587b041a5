"""Wire conventions: the official envelope, the error family and the request id."""
