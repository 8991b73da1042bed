# syntax=docker/dockerfile:1
#
# asyncfn as a small static image: the binary and CA certificates, running as an
# unprivileged user. Build for Snowpark Container Services (linux/amd64) with
#   docker build --platform linux/amd64 -t asyncfn .
# Run: it listens on 0.0.0.0, so it needs an API key (or ASYNCFN_INSECURE=true when
# something in front already keeps strangers out):
#   docker run -p 8080:8080 -v asyncfn-data:/data -e ASYNCFN_API_KEYS=... asyncfn
# Settings are ASYNCFN_* variables (docker run -e ASYNCFN_STORE=postgres://... asyncfn), or
# flags after the image name, added to the serve command (docker run ... asyncfn --workers 8).

# The build stage runs on the builder's platform and cross-compiles: no emulation.
FROM --platform=$BUILDPLATFORM golang:1.26-bookworm AS build
ARG TARGETOS=linux
ARG TARGETARCH=amd64
WORKDIR /src
# Dependencies first, so that editing the code does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# Static (no cgo: the SQLite driver is pure Go), reproducible paths, no debug symbols.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags="-s -w" -o /out/asyncfn ./cmd/asyncfn \
 && mkdir -p /out/data

# distroless/static: CA certificates, tzdata and a nonroot user (65532), no shell.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/asyncfn /usr/local/bin/asyncfn
# The SQLite store lives here; mount a volume to keep it across containers.
COPY --from=build --chown=65532:65532 /out/data /data
VOLUME /data
WORKDIR /data
USER 65532:65532
EXPOSE 8080
# Defaults as variables, not flags, so that docker run -e can change them (flags would win).
ENV ASYNCFN_ADDR=0.0.0.0:8080 ASYNCFN_STORE=/data/asyncfn.db ASYNCFN_LOG_FORMAT=json
ENTRYPOINT ["/usr/local/bin/asyncfn", "serve"]
