"""The shared core: what the deployments and the router both need (config, errors, breakers, pricing,
generation types, the hosted SDKs' boundary). It imports only the domain (content/, models/)."""
