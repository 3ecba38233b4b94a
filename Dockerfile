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
RUN mkdir -p /work/workspaces /work/cache /home/taskworker \
 && chmod 0711 /work /work/workspaces && chmod 0700 /work/cache /home/taskworker
COPY --from=build /out/taskworker /usr/local/bin/taskworker
# The worker is root in the container (give the container a user namespace:
# Kubernetes hostUsers: false, Docker --userns-remap) only so that each agent
# runs as a uid of its own, 20000-20999, which owns nothing of the worker's.
ENV HOME=/home/taskworker \
    TASKWORKER_WORKSPACE_DIR=/work/workspaces \
    TASKWORKER_CACHE_DIR=/work/cache \
    TASKWORKER_HTTP_ADDR=:8080 \
    TASKWORKER_SANDBOX=uid \
    TASKWORKER_SANDBOX_UIDS=20000-20999
USER 0:0
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/taskworker"]
CMD ["run"]
