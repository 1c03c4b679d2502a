"""Ray Serve deployments of rayrec (encoder and HTTP ingress); built on the actors package."""
