"""canaryctl: progressive canary releases for Istio, judged on Prometheus data."""

__version__ = "0.1.0"
