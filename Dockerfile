# The flows service image, for people who deploy with containers (tests never need Docker).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY events ./events
COPY projections ./projections
COPY services ./services
RUN pip install --no-cache-dir '.[postgres]'
# Run unprivileged: the service needs nothing of root's, only its data dir.
RUN useradd --system --uid 10001 --home-dir /data flows \
    && mkdir -p /data && chown flows /data
USER flows
ENV FLOWS_DATA_DIR=/data
VOLUME ["/data"]
ENTRYPOINT ["flows"]
CMD ["serve"]
