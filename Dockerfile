# syntax=docker/dockerfile:1
#
# taskworker's image: a static daemon on Debian with git and CA certificates,
# running as a non-root user. The coding agents' CLIs are added with
#   docker build --build-arg INSTALL_AGENTS=true -t taskworker .
# (see the README, "Running in production").

# Build stage: the same flags as the test that checks this file.
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "-s -w -X github.com/taskworker/taskworker/worker.Version=${VERSION}" -o /out/taskworker ./cmd/taskworker

FROM debian:12.11-slim AS runtime
ARG INSTALL_AGENTS=false
ARG CLAUDE_CODE_VERSION=2.1.332
ARG CODEX_VERSION=0.171.0
RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates openssh-client \
 && if [ "$INSTALL_AGENTS" = "true" ]; then \
      apt-get install -y --no-install-recommends nodejs npm \
      && npm install --global --omit=dev "@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}" "@openai/codex@${CODEX_VERSION}" \
      && npm cache clean --force; \
    fi \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 10001 taskworker \
 && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/taskworker --shell /usr/sbin/nologin taskworker \
 && mkdir -p /work/workspaces /work/cache \
 && chown -R 10001:10001 /work
COPY --from=build /out/taskworker /usr/local/bin/taskworker
ENV HOME=/home/taskworker \
    TASKWORKER_WORKSPACE_DIR=/work/workspaces \
    TASKWORKER_CACHE_DIR=/work/cache \
    TASKWORKER_HTTP_ADDR=:8080
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/taskworker"]
CMD ["run"]
