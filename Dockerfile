# One image per Palaver binary, all built the same way: a static Go binary
# on distroless static:nonroot (no shell, no package manager, uid 65532).
# Build from the repository root, naming the binary:
#
#   docker build --build-arg BINARY=gateway  -t palaver/gateway  .
#   docker build --build-arg BINARY=history  -t palaver/history  .
#   docker build --build-arg BINARY=operator -t palaver/operator .
#   docker build --build-arg BINARY=presence -t palaver/presence .
#
# The binary is /usr/local/bin/<BINARY>; charts/palaver names it as the
# container's command. The default (last) target is the production image.
# The Tiltfile compiles on the host instead and uses the "live" target:
# bin/linux/<BINARY> on distroless's debug variant, for live update only
# (docs/kubernetes.md, "Live update").

# Where each binary's main package is, from the repository root.
ARG BINARY=gateway

FROM golang:1.26 AS build
ARG BINARY
WORKDIR /src
ENV CGO_ENABLED=0
COPY go.work go.work.sum ./
COPY services/go.mod services/go.sum services/
COPY operator/go.mod operator/go.sum operator/
RUN go mod download
COPY services/ services/
COPY operator/ operator/
RUN case "$BINARY" in \
      operator) pkg=./operator/cmd ;; \
      *) pkg=./services/cmd/$BINARY ;; \
    esac && \
    go build -trimpath -ldflags="-s -w" -o /out/$BINARY "$pkg"

# For `tilt up` only: busybox (/busybox: sh, tar, cp, kill) for Tilt's
# live update, which copies files in with tar and runs commands with sh,
# and hack/tilt/supervise.sh, which restarts the binary after a sync.
FROM gcr.io/distroless/static:debug-nonroot AS live
ARG BINARY
COPY bin/linux/${BINARY} /usr/local/bin/${BINARY}
COPY hack/tilt/supervise.sh /usr/local/bin/supervise
USER 65532:65532

FROM gcr.io/distroless/static:nonroot
ARG BINARY
COPY --from=build /out/${BINARY} /usr/local/bin/${BINARY}
USER 65532:65532
