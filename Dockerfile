# corral's container image, laid out as the model-management standard has it
# (SPEC section 6):
#   /app/models           the example models, baked in at build
#   /app/external_models  mounted or downloaded models, linked into models/ (a volume)
#   /app/samples          speaker samples and other shared inputs (a volume)
# Two stages: the first builds with the -dev packages, the second holds only
# the runtime libraries, the corral binary, the Python SDK and the built
# example models.
#
#   docker build -t corral .
#   docker run -p 8766:8766 -v $PWD/external_models:/app/external_models corral

FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config \
      libuv1-dev libh2o-dev libssl-dev libjansson-dev libyaml-dev libcurl4-openssl-dev zlib1g-dev \
      libgrpc-dev libprotobuf-c-dev protobuf-c-compiler libsqlite3-dev libarchive-dev \
      libespeak-ng-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The build context has no tests/ (.dockerignore): CORRAL_TESTS=OFF builds the daemon, the C SDK and the
# example models, which land beside their model.yaml.
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCORRAL_TESTS=OFF \
 && cmake --build build -j"$(nproc)" \
 && strip build/corral build/corral-shim

FROM debian:bookworm-slim
# What build/corral links (readelf -d: h2o, libuv, jansson, libyaml, libcurl, gRPC, zlib, OpenSSL,
# protobuf-c, SQLite, libarchive), what the example models need (python3 for echo and tokens; eSpeak NG and its voices for
# tts-espeak), and nothing else: HEALTHCHECK uses python3 (and no proxy a container may be given), so no curl. tests/blackbox/test_container.py
# checks this list against the binary's libraries.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libh2o0.13 libuv1 libjansson4 libyaml-0-2 libcurl4 libgrpc29 zlib1g libssl3 libprotobuf-c1 libsqlite3-0 libarchive13 \
      python3 libespeak-ng1 espeak-ng-data \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /app --no-create-home --shell /usr/sbin/nologin corral

COPY --from=build /src/build/corral /usr/local/bin/corral
# the guard above every worker, linking only libc (src/shim.h); the daemon finds it beside itself
COPY --from=build /src/build/corral-shim /usr/local/bin/corral-shim
COPY --from=build /src/sdk/python /app/sdk/python
COPY --from=build /src/examples/models /app/models
COPY scripts/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
# The daemon links external models into models/ at each scan, and models download into external_models/:
# the corral user owns those two directories. The baked-in models stay root's, read-only to it, and so do
# the samples (read-only by convention; a mounted volume brings its own owner).
RUN mkdir -p /app/external_models /app/samples \
 && chown corral:corral /app/models /app/external_models \
 && chmod 0755 /usr/local/bin/docker-entrypoint.sh

ENV CORRAL_PYTHON_SDK=/app/sdk/python \
    PORT=8766 \
    GRPC_PORT=8767 \
    LOG_LEVEL=INFO
VOLUME ["/app/external_models", "/app/samples"]
EXPOSE 8766 8767
USER corral
WORKDIR /app
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:%s/v2/health/ready' % os.environ.get('PORT', '8766'), timeout=4)"]
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
