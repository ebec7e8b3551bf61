# canaryctl: one image for the CLI, the CronJob (`canaryctl reconcile`) and the daemon (`canaryctl run`).
# Runs as a non-root numeric user and writes nothing outside /tmp, so it works with
# readOnlyRootFilesystem: true and runAsNonRoot: true.
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY canaryctl ./canaryctl
COPY policies ./policies
COPY examples/rest-apl ./examples/rest-apl
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.12-slim
LABEL org.opencontainers.image.title="canaryctl" \
      org.opencontainers.image.description="Progressive canary releases for Istio, judged on Prometheus data" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
COPY --from=build /install /usr/local
COPY policies /etc/canaryctl/policies
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["canaryctl"]
CMD ["--help"]
