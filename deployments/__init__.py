"""Ray Serve deployments of the LEARN-X AI service and the app builder."""
