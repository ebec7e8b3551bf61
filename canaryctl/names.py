"""Kubernetes names: the one place that says what a name may look like (pure).

Names reach the API server (URL paths), PromQL (label values) and Lease names, so canaryctl
accepts only what Kubernetes itself accepts, and a quote, brace, newline or regex
metacharacter never gets that far.
"""

from __future__ import annotations

import re

# RFC 1123 label: namespaces, Services, webhook and metric names (at most 63 characters).
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# RFC 1123 subdomain: most object names (Deployments, VirtualServices; at most 253 characters).
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
SUBDOMAIN_MAX = 253


def is_label(value: str) -> bool:
    return DNS_LABEL.fullmatch(value) is not None


def is_subdomain(value: str) -> bool:
    return len(value) <= SUBDOMAIN_MAX and DNS_SUBDOMAIN.fullmatch(value) is not None


def check_label(value: str) -> str:
    """A pydantic-style validator: the value, or ``ValueError`` naming what is wrong."""
    if not is_label(value):
        raise ValueError(f"must be a DNS-1123 label (a-z, 0-9, '-'), got {value!r}")
    return value
