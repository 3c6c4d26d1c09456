# syntax=docker/dockerfile:1
#
# One small image holding the three example services; the command picks one:
#
#   docker build -t warren-example .
#   docker run --rm warren-example                      # payment-service (the default)
#   docker run --rm warren-example validation-service
#   docker run --rm warren-example payment-monitor
#
# The binaries are static (CGO_ENABLED=0), so the final stage needs no libc.
# examples/containers_test.go builds them exactly as the build stage does and
# checks that they are static.

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/ \
        ./examples/payment-service ./examples/validation-service ./examples/payment-monitor

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
ENV PATH=/usr/local/bin
# 8080: the payment service's HTTP API; 7946: warren gossip (TCP and UDP);
# data connections use a free port announced over gossip.
EXPOSE 8080 7946/tcp 7946/udp
USER nonroot:nonroot
CMD ["payment-service"]
