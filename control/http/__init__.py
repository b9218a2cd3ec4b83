"""The control plane's HTTP surface: the Starlette app, routes, authentication and the OpenAPI text."""
