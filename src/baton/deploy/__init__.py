"""Deploying baton beyond one process: Kubernetes manifests (``baton deploy k8s``) and Ray Serve."""
