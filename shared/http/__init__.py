"""The HTTP edge: the resolver every API function shares, the error mapping, the OpenAPI
responses. May import the domain and everything below it."""
